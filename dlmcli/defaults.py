"""How a run's parameters are chosen: family defaults (dlmcli.families) < catalog entry < the file's hints < flags."""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable

from . import families
from .engine.params import MAX_LENGTH, GenerationParams

# Keys a GGUF may carry to recommend its own settings (the bundled tiny models do).
GGUF_KEYS = {"dlm.gen_length": int, "dlm.steps": int, "dlm.block_length": int}

FIELDS = {f.name for f in dataclasses.fields(GenerationParams)}


def file_hints(meta: Callable[[str], Any], arch: str | None) -> dict[str, int]:
    """The usable ``dlm.*`` settings of a GGUF, by GenerationParams field; META(key) gives a key's value
    (text or number) or None. A malformed, non-finite, non-positive or too large (> MAX_LENGTH) value is
    ignored, not fatal; so is a block
    length that does not divide the file's own (or its family's) length: a broken hint, not the user's error."""
    hints: dict[str, int] = {}
    for key, conv in GGUF_KEYS.items():
        raw = meta(key)
        if raw is None or isinstance(raw, bool):
            continue
        try:
            value = conv(raw)
        except (TypeError, ValueError, OverflowError):  # int(inf) overflows, int(nan) is a ValueError
            continue
        if 0 < value <= MAX_LENGTH:
            hints[key.split(".", 1)[1]] = value
    family = families.family(arch).generation
    length = hints.get("gen_length", family.get("gen_length", GenerationParams.gen_length))
    if length % hints.get("block_length", 1):
        del hints["block_length"]
    return hints


def sources(arch: str | None, catalog: dict, file: dict) -> tuple[GenerationParams | None, dict[str, str], str]:
    """The generation settings a run starts from when no flag is given, and the layer each value came
    from: "dlm" (built in), "family ARCH", "catalog", "file" (its dlm.* keys) or "fitted" (chosen to
    make the block split fit). Returns (params, sources, error): params None and the error's text
    when the combination cannot run."""
    from .errors import DlmError

    family = families.family(arch).generation
    label = f"family {arch}" if families.known(arch) else f"family {families.FALLBACK_ARCH} (fallback)"
    layers = [("dlm", {**GenerationParams().to_dict(), "early_stop": True}), (label, family),
              ("catalog", {k: v for k, v in catalog.items() if k in FIELDS and family.get(k) != v}),
              ("file", file)]
    merged: dict[str, Any] = {}
    where: dict[str, str] = {}
    for name, values in layers:
        for k, v in values.items():
            merged[k], where[k] = v, name
    try:
        params = resolve(arch or "", {**{k: v for k, v in catalog.items() if k in FIELDS}, **file}, {})
    except DlmError as e:
        return None, where, str(e)
    for k, v in params.to_dict().items():
        if merged.get(k) != v:
            where[k] = "fitted"
    return params, where, ""


def resolve(arch: str, model_defaults: dict, overrides: dict) -> GenerationParams:
    """Merge dataclass defaults < family < model (catalog entry, then file) < flags (``resolve_with_notes``)."""
    return resolve_with_notes(arch, model_defaults, overrides)[0]


def resolve_with_notes(arch: str, model_defaults: dict, overrides: dict) -> tuple[GenerationParams, list[str]]:
    """``resolve``, and a note for each value chosen for the user rather than taken as set.

    ``overrides`` holds only what the user set. Adjustments (docs/parameters.md):
    - steps follow the generation length (steps == tokens, the authors' best-quality setting)
      unless --steps is given;
    - a block longer than the generation shrinks to it;
    - a block length the user did not set is chosen to fit: it divides the generation length (and,
      with --steps, splits the steps evenly), as close as can be to the default;
    - derived steps round up to a multiple of the number of blocks.
    What the user set themselves is never changed: if it does not fit, it is an error.
    """
    unknown = set(overrides) - FIELDS
    if unknown:
        raise TypeError(f"unknown generation parameters: {', '.join(sorted(unknown))}")
    # Early stop never changes the trimmed answer (docs/parameters.md), so it is on unless refused.
    merged = dict(early_stop=True, **families.family(arch).generation)
    merged.update(model_defaults)
    user = {k: v for k, v in overrides.items() if v is not None}
    if "gen_length" in user and "steps" not in user:
        merged["steps"] = user["gen_length"]
    merged.update(user)
    notes: list[str] = []
    if merged.get("schedule") == "block":
        # Timestep families (Dream) have no block length of their own: fall back to the dataclass's.
        merged.setdefault("block_length", GenerationParams.block_length)
        notes = _fit_blocks(merged, user)
    return GenerationParams(**merged).validate(), notes


def _whole(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and 1 <= int(v) <= MAX_LENGTH


def _fit_blocks(merged: dict, user: dict) -> list[str]:
    """Make the block split fit, changing only what the user did not set; returns notes."""
    n, steps, block = merged["gen_length"], merged["steps"], merged["block_length"]
    if not all(_whole(v) for v in (n, steps, block)):
        return []  # validate() names the flag at fault
    notes = []
    if "block_length" not in user:
        preferred = min(block, n)
        # Block lengths that divide the length, in a number of blocks that divides the steps the user set.
        limit = math.gcd(n, steps) if "steps" in user else n
        lengths = [n // d for d in _divisors(limit)]
        lengths = [b for b in lengths if b > 1] or lengths  # one token per block is the last resort
        chosen = min(lengths, key=lambda b: (abs(b - preferred), -b))
        merged["block_length"] = block = chosen
        if chosen != preferred:
            fit = f"gen length {n}" + (f" and --steps {steps}" if "steps" in user else "")
            notes.append(f"block length {chosen} instead of the default {preferred}, to fit {fit} "
                         f"(set --block-length to choose)")
    n_blocks = n // block if n % block == 0 else 0
    if "steps" not in user and n_blocks and steps % n_blocks:
        merged["steps"] = steps + n_blocks - steps % n_blocks
        notes.append(f"{merged['steps']} steps instead of {steps}, to split evenly over {n_blocks} blocks")
    return notes


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small) | {n // d for d in small})
