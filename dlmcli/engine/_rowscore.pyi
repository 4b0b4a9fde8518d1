# Types of the C kernel (_rowscore.c) for the type checker; the docstrings there say what each does.
from typing import Any

OPENMP: int
NO_PREFIX: int
ONLY_PREFIX: int

def score(logits: Any, index: Any, uncond: Any, scale: float, mode: int, out_idx: Any, out_val: Any,
          n_threads: int = 1, work: bytearray | None = None, /) -> None: ...
def sample(logits: Any, index: Any, uncond: Any, scale: float, temperature: float, top_k: int, top_p: float,
           raw: int, mode: int, uniforms: Any, out_idx: Any, out_val: Any, n_threads: int = 1,
           work: bytearray | None = None, flags: int = 0, /) -> None: ...
def elementwise(which: int, x: Any, out: Any, /) -> None: ...
