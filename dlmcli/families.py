"""The model families dlm runs, in one place: what each one's authors recommend and how its logits line up.

A family is a GGUF ``general.architecture``. The rest of dlm asks this registry: the generation
defaults (``dlmcli.defaults``), the catalog (``dlmcli.hub.catalog``), the model loader
(``dlmcli.api``) and the CLI's help; adding a family is one entry in ``FAMILIES``. Sources: the
LLaDA README/demo and the Dream README (docs/parameters.md).

How a base model wants its prompt framed (RND1 base: "Question: ...") is a property of that model,
not of its family (the family's instruct models have a chat template), so it lives on the catalog
entry (``CatalogEntry.prompt_format``).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping


@dataclass(frozen=True)
class Family:
    arch: str  # GGUF general.architecture
    label: str  # how messages and help name it
    shift_logits: bool  # position i is predicted by the output at i-1, when the GGUF has no diffusion.shift_logits
    generation: Mapping[str, Any]  # GenerationParams fields the authors recommend, schedule included (read-only)

    @property
    def schedule(self) -> str:
        return str(self.generation["schedule"])

    def defaults(self) -> dict[str, Any]:
        """The generation defaults as a fresh plain dict."""
        return dict(self.generation)


def _family(arch: str, label: str, *, shift_logits: bool, **generation: Any) -> Family:
    return Family(arch, label, shift_logits, MappingProxyType(generation))


FAMILIES: tuple[Family, ...] = (
    _family("llada", "LLaDA", shift_logits=False, schedule="block", gen_length=128, steps=128, block_length=32,
            algorithm="low-confidence", temperature=0.0),
    _family("llada-moe", "LLaDA-MoE", shift_logits=False, schedule="block", gen_length=128, steps=128,
            block_length=32, algorithm="low-confidence", temperature=0.0),
    _family("dream", "Dream", shift_logits=True, schedule="timestep", gen_length=128, steps=128,
            algorithm="entropy", temperature=0.2, top_p=0.95, eps=1e-3),
    _family("rnd1", "RND1", shift_logits=True, schedule="timestep", gen_length=256, steps=256,
            algorithm="entropy", temperature=0.2, top_p=0.95, eps=1e-3),
)

# A diffusion GGUF of an architecture not listed here gets LLaDA's generation defaults, and shifted
# logits unless the file says otherwise (the loader's rule before this registry existed).
FALLBACK_ARCH = "llada"
FALLBACK_SHIFT = True


def known(arch: str | None) -> Family | None:
    """The family of ARCH, or None when dlm has no settings of its own for it."""
    # Looked up on each call (four entries), so a family added to FAMILIES is seen everywhere at once.
    return next((f for f in FAMILIES if f.arch == arch), None)


def family(arch: str | None) -> Family:
    """The family of ARCH; an unknown architecture gets the fallback's generation defaults."""
    return known(arch) or known(FALLBACK_ARCH)  # type: ignore[return-value]


def shift_logits(arch: str | None, declared: bool | None = None) -> bool:
    """Whether ARCH's logits are shifted: what the file declares, else its family's, else FALLBACK_SHIFT."""
    if declared is not None:
        return declared
    fam = known(arch)
    return fam.shift_logits if fam else FALLBACK_SHIFT


def labels() -> str:
    """'LLaDA, LLaDA-MoE, Dream and RND1': the families, for messages and help."""
    names = [f.label for f in FAMILIES]
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names)
