"""Trace files: a run as JSON Lines, complete enough to replay and draw it without the model.

One object per line, each with a ``type``:
- ``header``: model, prompt, parameters, the initial canvas, and ``vocab``, the text of every
  token id in it (mask and end-of-generation tokens included);
- ``step``: one per forward pass, every field of the engine's Step (the whole canvas after the
  step, the positions committed with their tokens and confidences, timings) plus ``vocab``, the
  text of token ids seen for the first time in this step;
- ``end``: the answer, its tokens, the finish reason and the timings. A trace without it was cut
  short (Ctrl-C, a crash, or a run still going); readers say so and use what is there.

Each line is flushed as it is written, so a trace is readable while the run goes on.
"""

from __future__ import annotations

import functools
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..engine.events import Step
from ..errors import DlmError
from .base import RunInfo

FORMAT = "dlm-trace"
VERSION = 2  # 2: a step's passes planned are "planned_steps" (version 1 called them "steps")

STEP_FIELDS = ("index", "planned_steps", "block", "n_blocks", "block_start", "block_end", "gen_start", "masks_left",
               "forward_s", "sampling_s", "seq")


def _token_text(vocab: dict[int, str], token: int) -> str:
    return vocab.get(int(token), f"⟨{int(token)}⟩")


def _floats(values) -> list:
    # JSON has no NaN: a confidence of NaN (position filled by early stop, not chosen) is null.
    return [None if math.isnan(v) else float(v) for v in np.asarray(values, dtype=np.float64).tolist()]


def _dumps(obj: dict) -> str:
    # ASCII keeps every line valid UTF-8 whatever the prompt holds (lone surrogates included).
    return json.dumps(obj, ensure_ascii=True, allow_nan=False, separators=(",", ":"))


class TraceWriter:
    """A Sink that writes the trace; opening the file happens here, so a bad path fails early."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.steps = 0
        self._wrote = False
        self._failed = False  # a write failed: closing must not raise the same error again
        self._known: set[int] = set()
        self._text: Callable[[int], str] = str
        self._stdout = str(path) == "-"
        self._created = not self._stdout and not self.path.exists()
        if self._stdout:  # '-': the trace is what stdout carries (the end record holds the answer)
            self._f = sys.stdout
            return
        try:
            # Append mode: check that it can be written without clobbering an old trace yet; the
            # file is emptied when the run starts.
            self._f = open(self.path, "a", encoding="utf-8", newline="\n")
        except OSError as e:
            raise DlmError(f"cannot write the trace file {path}: {e.strerror or e}") from None

    def _write(self, obj: dict) -> None:
        if self._f is None:
            return
        try:
            self._f.write(_dumps(obj) + "\n")
            self._f.flush()
        except OSError as e:
            self._failed = True
            raise DlmError(f"writing the trace file {self.path} failed: {e.strerror or e}") from None
        self._wrote = True

    def _vocab(self, ids) -> dict[str, str]:
        new = sorted({int(t) for t in ids} - self._known)
        self._known.update(new)
        return {str(t): self._text(t) for t in new}

    def start(self, info: RunInfo) -> None:
        self._text = info.token_text
        try:
            if not self._stdout:
                self._f.seek(0)
                self._f.truncate()
        except OSError as e:
            # A device or pipe (/dev/null, a FIFO) cannot be truncated and needs not be; a file must be.
            if self.path.is_file():
                raise DlmError(f"cannot write the trace file {self.path}: {e.strerror or e}") from None
        vocab = self._vocab([*info.canvas, info.mask_id, *info.eog_ids])
        self._write({
            "type": "header", "format": FORMAT, "version": VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "model": info.model, "prompt": info.prompt, "prompt_tokens": [int(t) for t in info.prompt_tokens],
            "gen_start": int(info.gen_start), "mask_id": int(info.mask_id),
            "eog_ids": sorted(int(t) for t in info.eog_ids), "fixed": [int(p) for p in info.fixed],
            "params": info.params, "canvas": [int(t) for t in info.canvas], "vocab": vocab,
        })

    def step(self, step: Step) -> None:
        obj: dict[str, Any] = {"type": "step"}
        obj.update({k: getattr(step, k) for k in STEP_FIELDS})
        obj["index"], obj["forward_s"], obj["sampling_s"] = int(step.index), float(step.forward_s), float(step.sampling_s)
        obj.update(
            canvas=np.asarray(step.canvas).tolist(), positions=np.asarray(step.positions).tolist(),
            tokens=np.asarray(step.tokens).tolist(), confidences=_floats(step.confidences),
        )
        vocab = self._vocab(obj["canvas"])
        if vocab:
            obj["vocab"] = vocab
        self._write(obj)
        self.steps += 1

    def finish(self, result) -> None:
        t = result.timings
        self._write({
            "type": "end", "steps": int(result.steps), "text": result.text, "tokens": [int(x) for x in result.tokens],
            "finish_reason": result.finish_reason,
            "timings": {"total_s": t.total_s, "forward_s": t.forward_s, "sampling_s": t.sampling_s},
        })

    def close(self) -> None:
        f, self._f = self._f, None
        if f is None:
            return
        try:
            f.flush() if self._stdout else f.close()  # flushes what is still buffered
        except OSError as e:
            if not self._failed:
                raise DlmError(f"writing the trace file {self.path} failed: {e.strerror or e}") from None
        if not self._wrote and self._created:  # nothing ran: leave no empty file behind
            try:
                self.path.unlink()
            except OSError:
                pass


# --- reading ---------------------------------------------------------------------------------


@dataclass
class Trace:
    """A trace read back: the RunInfo and Steps the run produced, and its end record if any."""

    path: Path
    header: dict
    info: RunInfo
    steps: list[Step]
    end: dict | None
    vocab: dict[int, str] = field(default_factory=dict)
    torn: bool = False  # the last line was cut off mid-write

    @property
    def complete(self) -> bool:
        return self.end is not None

    def token_text(self, token: int) -> str:
        return _token_text(self.vocab, token)

    @property
    def final_canvas(self) -> list[int]:
        return self.steps[-1].canvas.tolist() if self.steps else list(self.info.canvas)

    def answer(self) -> str:
        """The answer as the run printed it; for a cut-short trace, the text committed so far."""
        if self.end is not None:
            return str(self.end.get("text", ""))
        out = []
        for t in self.final_canvas[self.info.gen_start:]:
            if t in self.info.eog_ids:
                break
            if t != self.info.mask_id:
                out.append(self.token_text(t))
        return "".join(out)


def _step_from(obj: dict, version: int) -> Step:
    canvas = np.array(obj["canvas"], dtype=np.int32)
    canvas.setflags(write=False)
    conf = np.array([math.nan if c is None else c for c in obj["confidences"]], dtype=np.float64)
    return Step(
        index=int(obj["index"]), planned_steps=int(obj["planned_steps" if version >= 2 else "steps"]), block=int(obj["block"]), n_blocks=int(obj["n_blocks"]),
        block_start=int(obj["block_start"]), block_end=int(obj["block_end"]), gen_start=int(obj["gen_start"]),
        canvas=canvas, positions=np.array(obj["positions"], dtype=np.int64),
        tokens=np.array(obj["tokens"], dtype=np.int32), confidences=conf, masks_left=int(obj["masks_left"]),
        forward_s=float(obj["forward_s"]), sampling_s=float(obj["sampling_s"]), seq=int(obj.get("seq", 0)),
    )


def read_trace(path: str | Path) -> Trace:
    """Read a trace; raise DlmError when it is not one. A cut-short trace reads as ``complete=False``."""
    path = Path(path)
    try:
        raw = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    except FileNotFoundError:
        raise DlmError(f"trace file not found: {path}") from None
    except IsADirectoryError:
        raise DlmError(f"{path} is a directory, not a trace file") from None
    except OSError as e:
        raise DlmError(f"cannot read {path}: {e.strerror or e}") from None
    lines = raw.split(b"\n")
    unterminated = not raw.endswith(b"\n")  # every record ends with a newline when complete
    records: list[tuple[int, dict]] = []
    torn = False
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError) as e:
            if n == len(lines) and unterminated and records:
                torn = True  # the run was killed mid-line: keep what came before
                break
            if not records:
                raise DlmError(f"{path} is not a dlm trace (line 1 is not JSON); write one with "
                               f"'dlm generate --trace FILE'") from None
            raise DlmError(f"{path}: line {n} is not valid JSON ({e})") from None
        records.append((n, obj))
    if not records or records[0][1].get("type") != "header" or records[0][1].get("format") != FORMAT:
        raise DlmError(f"{path} is not a dlm trace (no header); write one with 'dlm generate --trace FILE'")
    header = records[0][1]
    try:
        version = int(header.get("version", 1))
    except (TypeError, ValueError):
        raise DlmError(f"{path}: malformed trace header (version {header.get('version')!r})") from None
    if version > VERSION:
        raise DlmError(f"{path} is a version {version} trace; this dlm reads versions up to {VERSION}: "
                       f"upgrade dlm")

    vocab = {int(k): v for k, v in header.get("vocab", {}).items()}
    steps, end = [], None
    try:
        for _n, obj in records[1:]:
            kind = obj.get("type")
            if kind == "step":
                vocab.update({int(k): v for k, v in obj.get("vocab", {}).items()})
                steps.append(_step_from(obj, version))
            elif kind == "end":
                end = obj
            # other types: written by a newer dlm; skipped
        info = RunInfo(
            model=str(header["model"]), prompt=str(header.get("prompt", "")),
            prompt_tokens=tuple(int(t) for t in header.get("prompt_tokens", ())),
            canvas=tuple(int(t) for t in header["canvas"]), gen_start=int(header["gen_start"]),
            mask_id=int(header["mask_id"]), params=dict(header.get("params", {})),
            token_text=functools.partial(_token_text, vocab),
            eog_ids=frozenset(int(t) for t in header.get("eog_ids", ())),
            fixed=tuple(int(p) for p in header.get("fixed", ())),
        )
        trace = Trace(path=path, header=header, info=info, steps=steps, end=end, vocab=vocab, torn=torn)
    except (KeyError, TypeError, ValueError) as e:
        raise DlmError(f"{path}: malformed trace record ({type(e).__name__}: {e})") from None
    return trace
