"""The answer of one sequence as it comes together: the committed prefix, turned into text.

Commits are never undone, so the tokens before the first mask are final; their text (minus a
trailing partial UTF-8 character, minus what could still turn out to be a stop string) can be
sent at once. Streamed and plain answers both come from this one object, so the streamed
deltas always add up to the plain answer.
"""

from __future__ import annotations

import codecs

import numpy as np

from ..engine.events import Step


class Answer:
    def __init__(self, piece, mask_id: int, eog_ids: frozenset, gen_start: int, stop: list[str]):
        self.piece = piece  # token id -> bytes
        self.mask_id = mask_id
        self.eog = np.fromiter(eog_ids, dtype=np.int64) if eog_ids else np.zeros(0, np.int64)
        self.gen_start = gen_start
        self.stop = [s for s in stop if s]
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.tokens: list[int] = []  # committed answer tokens so far (trimmed at end-of-generation)
        self.text = ""  # decoded text of those tokens
        self.sent = 0  # characters of text already handed out
        self.finish_reason: str | None = None  # set once the answer is final
        self.steps = 0

    @property
    def final(self) -> bool:
        return self.finish_reason is not None

    def update(self, step: Step, done: bool = False) -> str:
        """Take a step's canvas; returns the new text that is now certain (may be empty)."""
        self.steps = step.index + 1
        if self.final:
            return ""
        gen = step.canvas[self.gen_start:]
        masked = np.flatnonzero(gen == self.mask_id)
        prefix_end = int(masked[0]) if masked.size else len(gen)
        eog = np.flatnonzero(np.isin(gen[:prefix_end], self.eog)) if self.eog.size else np.zeros(0, np.int64)
        ended = eog.size > 0
        if ended:
            prefix_end = int(eog[0])
        new = [int(t) for t in gen[len(self.tokens):prefix_end]]
        complete = ended or done or prefix_end == len(gen)
        if new:
            self.tokens += new
            self.text += self._decoder.decode(b"".join(self.piece(t) for t in new))
        if complete:
            self.text += self._decoder.decode(b"", final=True)
            self.finish_reason = "stop" if ended else "length"
        return self._release()

    def _release(self) -> str:
        limit = len(self.text) if self.final else max(self.sent, len(self.text) - self.hold)
        found = [at for at in (self.text.find(s) for s in self.stop) if at >= 0]
        if found:
            # A stop string ends the answer, even before the canvas is done.
            self.text = self.text[:min(found)]
            self.finish_reason = "stop"
            limit = len(self.text)
        out = self.text[self.sent:limit]
        self.sent = max(self.sent, limit)
        return out
