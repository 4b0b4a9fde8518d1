"""What every consumer of a run is told, and the interface they implement."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

from ..engine.events import Step


@dataclass(frozen=True)
class RunInfo:
    """The run a sink is about to watch; nothing here refers to llama.cpp."""

    model: str
    prompt: str  # the prompt as the user gave it ('' when given as tokens)
    prompt_tokens: tuple[int, ...]
    canvas: tuple[int, ...]  # the initial canvas (prompt + masks)
    gen_start: int
    mask_id: int
    params: dict  # GenerationParams.to_dict()
    token_text: Callable[[int], str] = field(repr=False, compare=False, default=str)
    eog_ids: frozenset = frozenset()
    fixed: tuple[int, ...] = ()  # canvas positions given by the user in an infill or --force


class Sink(Protocol):
    def start(self, info: RunInfo) -> None: ...

    def step(self, step: Step) -> None: ...

    def finish(self, result) -> None: ...

    def close(self) -> None: ...
