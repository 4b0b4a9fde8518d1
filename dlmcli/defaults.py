"""Per-family defaults (what the model authors recommend) and how flags override them."""

from __future__ import annotations

import dataclasses

from .engine.params import GenerationParams

# Authors' recommendations: LLaDA README/demo and Dream README (see docs/parameters.md).
FAMILY_DEFAULTS: dict[str, dict] = {
    "llada": dict(schedule="block", gen_length=128, steps=128, block_length=32, algorithm="low-confidence",
                  temperature=0.0),
    "llada-moe": dict(schedule="block", gen_length=128, steps=128, block_length=32,
                      algorithm="low-confidence", temperature=0.0),
    "dream": dict(schedule="timestep", gen_length=128, steps=128, algorithm="entropy", temperature=0.2,
                  top_p=0.95, eps=1e-3),
    "rnd1": dict(schedule="timestep", gen_length=256, steps=256, algorithm="entropy", temperature=0.2,
                 top_p=0.95, eps=1e-3),
}

# Keys a GGUF may carry to recommend its own settings (the bundled tiny models do).
GGUF_KEYS = {"dlm.gen_length": int, "dlm.steps": int, "dlm.block_length": int}

# Families whose logits are unshifted when the GGUF has no diffusion.shift_logits key.
UNSHIFTED_FAMILIES = ("llada", "llada-moe")

FIELDS = {f.name for f in dataclasses.fields(GenerationParams)}


def resolve(arch: str, model_defaults: dict, overrides: dict) -> GenerationParams:
    """Merge dataclass defaults < family < model file < flags, then apply documented adjustments.

    ``overrides`` holds only what the user set. Adjustments (docs/parameters.md):
    - steps follow the generation length (steps == tokens, the authors' best-quality setting)
      unless --steps is given;
    - a block longer than the generation shrinks to it;
    - derived steps round up to a multiple of the number of blocks.
    """
    unknown = set(overrides) - FIELDS
    if unknown:
        raise TypeError(f"unknown generation parameters: {', '.join(sorted(unknown))}")
    # Early stop never changes the trimmed answer (docs/parameters.md), so it is on unless refused.
    merged = dict(early_stop=True, **FAMILY_DEFAULTS.get(arch, FAMILY_DEFAULTS["llada"]))
    merged.update(model_defaults)
    user = {k: v for k, v in overrides.items() if v is not None}
    if "gen_length" in user and "steps" not in user:
        merged["steps"] = user["gen_length"]
    merged.update(user)
    if "block_length" not in user and merged.get("schedule") == "block":
        # Timestep families (Dream) have no block length of their own: fall back to the dataclass's.
        merged["block_length"] = min(merged.get("block_length", GenerationParams.block_length),
                                     merged["gen_length"])
    params = GenerationParams(**merged)
    if params.schedule == "block" and "steps" not in user and params.block_length > 0 \
            and params.gen_length % params.block_length == 0:
        n_blocks = params.gen_length // params.block_length
        if params.steps % n_blocks:
            params = dataclasses.replace(params, steps=params.steps + n_blocks - params.steps % n_blocks)
    return params.validate()
