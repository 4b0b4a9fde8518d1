"""The curated catalog: short names for real diffusion GGUFs on the Hugging Face Hub.

Listing it needs no network. The exact file is resolved at pull time from the repo's file list by quant tag,
because uploaders rename files and add quants. Sources: docs/models.md (which marks the files seen elsewhere
and the ones inferred from the uploader's naming).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import families


def family_defaults(arch: str) -> dict[str, Any]:
    """Generation defaults for a GGUF ``general.architecture`` value (empty for unknown archs)."""
    fam = families.known(arch)
    return fam.defaults() if fam else {}


@dataclass(frozen=True)
class CatalogEntry:
    """One curated model: where it is, and what it wants beyond its family's defaults (dlmcli.families)."""

    name: str  # short name, e.g. "llada-8b-instruct"
    repo: str  # Hub repo id, owner/name
    quant: str  # default quant tag, matched against the repo's file names at pull time
    arch: str  # GGUF general.architecture: a family of dlmcli.families
    license: str
    size_gb: float  # approximate download size of the default quant, in GB (10^9 bytes)
    description: str
    chat: bool  # instruct model with a chat template in the GGUF
    override_items: tuple[tuple[str, Any], ...] = ()  # generation settings over the family's (immutable)
    prompt_format: str | None = None  # how a base model wants a plain prompt framed, "{prompt}" marking it

    @property
    def overrides(self) -> dict[str, Any]:
        """The entry's own generation settings, over its family's (a fresh plain dict)."""
        return dict(self.override_items)

    @property
    def defaults(self) -> dict[str, Any]:
        """What generation starts from: its family's defaults, then its own (a fresh plain dict)."""
        return {**families.family(self.arch).generation, **self.overrides}

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "repo": self.repo,
            "quant": self.quant,
            "arch": self.arch,
            "license": self.license,
            "size_gb": self.size_gb,
            "description": self.description,
            "chat": self.chat,
            "defaults": self.defaults,
            "prompt_format": self.prompt_format,
        }


def _entry(name, repo, quant, arch, license, size_gb, description, chat, prompt_format=None,
           **overrides) -> CatalogEntry:
    if families.known(arch) is None:
        raise ValueError(f"catalog entry {name}: no family {arch!r} in dlmcli.families")
    return CatalogEntry(name, repo, quant, arch, license, size_gb, description, chat, tuple(overrides.items()),
                        prompt_format)


CATALOG: tuple[CatalogEntry, ...] = (
    _entry(
        "llada-8b-instruct",
        "mradermacher/LLaDA-8B-Instruct-GGUF",
        "Q4_K_M",
        "llada",
        "MIT",
        4.9,
        "LLaDA 8B, instruction tuned",
        True,
    ),
    _entry(
        "llada-8b-base",
        "mradermacher/LLaDA-8B-Base-GGUF",
        "Q8_0",
        "llada",
        "MIT",
        8.5,
        "LLaDA 8B base, raw text",
        False,
    ),
    _entry(
        "llada-1.5",
        "mradermacher/LLaDA-1.5-GGUF",
        "Q4_K_M",
        "llada",
        "MIT",
        4.9,
        "LLaDA 1.5 (8B, preference-aligned instruct)",
        True,
    ),
    _entry(
        "llada-moe-7b-a1b-instruct",
        "mradermacher/LLaDA-MoE-7B-A1B-Instruct-GGUF",
        "Q4_K_M",
        "llada-moe",
        "Apache-2.0",
        4.5,
        "LLaDA-MoE 7B total / 1B active, instruct",
        True,
    ),
    _entry(
        "dream-7b-instruct",
        "bartowski/Dream-org_Dream-v0-Instruct-7B-GGUF",
        "Q4_K_M",
        "dream",
        "Apache-2.0",
        4.7,
        "Dream v0 7B, instruct (ChatML)",
        True,
    ),
    _entry(
        "dream-7b-base",
        "mradermacher/Dream-v0-Base-7B-GGUF",
        "Q4_K_M",
        "dream",
        "Apache-2.0",
        4.7,
        "Dream v0 7B base, raw text",
        False,
    ),
    _entry(
        "dream-coder-7b-instruct",
        "mradermacher/Dream-Coder-v0-Instruct-7B-GGUF",
        "Q4_K_M",
        "dream",
        "Apache-2.0",
        4.7,
        "Dream-Coder v0 7B, code instruct",
        True,
        temperature=0.1,
    ),
    _entry(
        "rnd1-30b-a3b-base",
        "vikramkr/RND1-Base-0910-Q8_0-GGUF",
        "Q8_0",
        "rnd1",
        "Apache-2.0",
        32.5,
        "RND1 30B total / 3B active MoE, base; prompt as 'Question: ...\\nAnswer:'",
        False,
        prompt_format="Question: {prompt}\nAnswer:",
    ),
)

_BY_NAME = {e.name: e for e in CATALOG}
_BY_REPO = {e.repo.lower(): e for e in CATALOG}


def catalog_names() -> list[str]:
    return [e.name for e in CATALOG]


def entry_by_name(name: str) -> CatalogEntry | None:
    return _BY_NAME.get(name.lower())


def entry_by_repo(repo: str) -> CatalogEntry | None:
    return _BY_REPO.get(repo.lower())
