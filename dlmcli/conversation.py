"""``Conversation``: a chat with one model that keeps its history (the ``dlm chat`` command and the
Python API share it). Messages are OpenAI-style, checked by ``dlmcli.messages``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .api import Generation
from .errors import GenerationError, UsageError
from .messages import check_messages

if TYPE_CHECKING:
    from .api import Model, Result
    from .engine.params import GenerationParams


class Conversation:
    """A chat with one model: the history, the system prompt and the generation settings.

    ``denoise(text)`` builds the prompt from the whole conversation plus TEXT and returns a
    ``Turn`` (a ``Generation``: iterate it for Steps); its ``result()`` adds the exchange to the
    history. A turn that is never finished (Ctrl-C, an error) leaves the conversation as it was.
    When the conversation no longer fits the model's context, the oldest exchanges are dropped
    from it (``Turn.dropped`` says how many); the system prompt is always kept.
    """

    def __init__(self, model: "Model", *, system: str | None = None, messages: Sequence | None = None,
                 **overrides):
        self.model = model
        self.system = system
        self.history: list[dict] = []  # user and assistant messages (system ones from a load, too)
        self.overrides: dict = {}
        self._version = 0  # bumped on every change, so a stale Turn cannot overwrite a newer history
        self.set(**overrides)
        if messages is not None:
            self.load(messages)

    # --- state ------------------------------------------------------------------------------
    @property
    def messages(self) -> list[dict]:
        """The conversation as OpenAI-style messages, system prompt first."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + [dict(m) for m in self.history]

    def load(self, messages: Sequence) -> None:
        """Replace the conversation; a leading system message becomes the system prompt."""
        msgs = check_messages(messages, allow_empty=True)
        if msgs and msgs[0]["role"] == "system":
            self.system, msgs = msgs[0]["content"], msgs[1:]
        self.history = msgs
        self._version += 1

    def clear(self) -> None:
        """Forget every exchange (the system prompt stays)."""
        self.history = []
        self._version += 1

    def set(self, **overrides) -> None:
        """Change generation settings (GenerationParams fields); None puts one back to the model's default.
        Checked at once: a bad value raises UsageError and changes nothing."""
        merged = dict(self.overrides)
        for key, value in overrides.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        self.model.params(**merged)  # raises on a bad value or combination
        self.overrides = merged

    def params(self) -> "GenerationParams":
        return self.model.params(**self.overrides)

    # --- turns ------------------------------------------------------------------------------
    def fit(self, text: str, params: "GenerationParams | None" = None) -> tuple[list[int], int]:
        """The prompt tokens for the next turn and how many history messages must be dropped for it
        (and the answer's gen_length positions) to fit the model's context."""
        params = params or self.params()
        head = [{"role": "system", "content": self.system}] if self.system else []
        new = [{"role": "user", "content": text}]
        check_messages(new)
        limit = self.model.context_length
        starts = [0] + [i for i, m in enumerate(self.history) if i and m["role"] == "user"] + [len(self.history)]
        tokens: list[int] = []
        for start in starts:
            tokens = self.model.chat_tokens(head + self.history[start:] + new)
            if not limit or len(tokens) + params.gen_length <= limit:
                return tokens, start
        with_system = " with the system prompt" if self.system else ""
        raise GenerationError(
            f"this message does not fit: it takes {len(tokens)} tokens{with_system}, the answer "
            f"{params.gen_length} more, but {self.model.name} has a context of {limit}; shorten it"
            + (" or the system prompt" if self.system else "") + " (or lower gen_length)"
        )

    def denoise(self, text: str) -> "Turn":
        """Start the next turn: TEXT as the user's message, the answer denoised from the whole conversation."""
        params = self.params()
        tokens, start = self.fit(text, params)
        return Turn(self, text, tokens, start, params)

    def send(self, text: str) -> "Result":
        """One turn, run to the end; the exchange is added to the history."""
        return self.denoise(text).result()

    def _commit(self, version: int, start: int, text: str, answer: str) -> None:
        if version != self._version:
            raise UsageError("the conversation changed while this turn ran; run one turn at a time")
        self.history = self.history[start:] + [{"role": "user", "content": text},
                                               {"role": "assistant", "content": answer}]
        self._version += 1



class Turn(Generation):
    """One exchange in progress: iterate it for Steps; ``result()`` adds it to the conversation.
    ``dropped``: exchanges dropped from the conversation so that this one fits the context."""

    def __init__(self, conversation: Conversation, text: str, prompt_tokens: list[int], start: int,
                 params: "GenerationParams"):
        model = conversation.model
        super().__init__(model, prompt_tokens, model._canvas(prompt_tokens, params), len(prompt_tokens),
                         params, trim=True)
        self.conversation = conversation
        self.text = text
        self.start = start
        self.dropped = sum(1 for m in conversation.history[:start] if m["role"] == "user")
        self._version = conversation._version
        self._committed: Result | None = None

    def result(self) -> "Result":
        if self._committed is None:
            result = super().result()
            self.conversation._commit(self._version, self.start, self.text, result.text)
            self._committed = result
        return self._committed
