"""Choosing the GGUF to use from a repo's file list: quant tags, llama.cpp shards, ambiguity.

The same selection runs on the Hub's listing at pull time and on the local snapshot when offline, so a
name resolves to the same file either way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import HubError

DEFAULT_QUANT = "Q4_K_M"

# llama.cpp's gguf-split naming: <base>-00001-of-00003.gguf
_SHARD = re.compile(r"^(?P<base>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
# mradermacher's byte-split parts (model.gguf.part1of2): must be concatenated, llama.cpp cannot load them
_PART = re.compile(r"\.gguf\.part\d+of\d+$", re.IGNORECASE)
# Quant tags as uploaders write them: Q4_K_M, IQ4_XS, Q8_0, TQ1_0, F16, BF16, MXFP4...
_QUANT_TAG = re.compile(
    r"(?<![A-Za-z0-9])(I?Q\d(?:_[A-Z0-9]+)*|TQ\d_\d|F16|BF16|F32|MXFP4(?:_MOE)?)(?![A-Za-z0-9_])",
    re.IGNORECASE,
)
# Files that are GGUF but not the language model itself.
_NOT_A_MODEL = re.compile(r"(^|/)(mmproj|imatrix)[^/]*$", re.IGNORECASE)


@dataclass(frozen=True)
class GGUFGroup:
    """One loadable model in a repo: a single .gguf, or every shard of a split one (first shard first)."""

    files: tuple[str, ...]  # repo-relative paths
    base: str  # the path without the shard suffix, used as the group's identity

    @property
    def first(self) -> str:
        return self.files[0]

    @property
    def sharded(self) -> bool:
        return len(self.files) > 1 or _SHARD.match(self.files[0]) is not None

    @property
    def quant(self) -> str | None:
        return quant_of(self.base)


def quant_of(path: str) -> str | None:
    """The quant tag in a file name (the last one, upper-cased), or None."""
    tags = _QUANT_TAG.findall(path.rsplit("/", 1)[-1]) or _QUANT_TAG.findall(path)
    return tags[-1].upper() if tags else None


def _matches_quant(path: str, quant: str) -> bool:
    pattern = r"(?<![A-Za-z0-9])" + re.escape(quant) + r"(?![A-Za-z0-9_])"
    return re.search(pattern, path, re.IGNORECASE) is not None


def group_ggufs(paths: list[str], *, complete_only: bool = True) -> tuple[list[GGUFGroup], list[str]]:
    """Group .gguf paths into loadable models. Returns (groups, problems) where problems are one-line notes
    on shard sets with files missing; with ``complete_only`` such sets are left out of ``groups``."""
    singles: list[GGUFGroup] = []
    shard_sets: dict[tuple[str, int], dict[int, str]] = {}
    for path in paths:
        if not path.lower().endswith(".gguf") or _NOT_A_MODEL.search(path):
            continue
        m = _SHARD.match(path)
        if m:
            key = (m.group("base"), int(m.group("count")))
            shard_sets.setdefault(key, {})[int(m.group("no"))] = path
        else:
            singles.append(GGUFGroup((path,), path[: -len(".gguf")]))
    groups = list(singles)
    problems = []
    for (base, count), shards in shard_sets.items():
        missing = [n for n in range(1, count + 1) if n not in shards]
        if missing:
            problems.append(f"{base}: shard(s) {', '.join(map(str, missing))} of {count} missing")
            if complete_only:
                continue
        groups.append(GGUFGroup(tuple(shards[n] for n in sorted(shards)), base))
    groups.sort(key=lambda g: g.base.lower())
    return groups, problems


def available_quants(paths: list[str]) -> list[str]:
    groups, _ = group_ggufs(paths)
    return sorted({g.quant or g.first for g in groups})


def select_group(paths: list[str], repo: str, quant: str | None, filename: str | None) -> GGUFGroup:
    """Pick the model to use from a repo's files.

    ``filename`` names the file exactly (or the first shard); otherwise ``quant`` is matched as a whole tag
    (Q4_K does not match Q4_K_M; Q4_K_M does not match IQ4_K_M). No quant means Q4_K_M, or the repo's only GGUF.
    Raises HubError naming what is available when nothing or more than one model matches.
    """
    groups, problems = group_ggufs(paths)
    if filename is not None:
        for g in groups:
            if filename in g.files or filename.lower() == g.first.lower():
                return g
        raise HubError(f"{repo} has no file {filename}" + _listing(paths, problems))
    if not groups:
        parts = [p for p in paths if _PART.search(p)]
        if parts:
            raise HubError(
                f"{repo} only has GGUFs split into .partXofY pieces ({parts[0]}, ...), which llama.cpp cannot "
                "load; pick another repo"
            )
        raise HubError(f"{repo} has no GGUF files" + (f" ({problems[0]})" if problems else ""))
    wanted = quant or DEFAULT_QUANT
    matching = [g for g in groups if _matches_quant(g.base, wanted)]
    if not matching and quant is None and len(groups) == 1:
        return groups[0]
    if not matching:
        incomplete = [p for p in problems if _matches_quant(p, wanted)]
        if incomplete:
            raise HubError(f"{repo}: the {wanted} GGUF is incomplete ({incomplete[0]})")
        raise HubError(f"no {wanted} GGUF in {repo}" + _listing(paths, problems))
    if len(matching) > 1:
        names = ", ".join(g.first for g in matching)
        raise HubError(f"{wanted} matches several GGUFs in {repo}: {names}; name one as {repo}:FILE.gguf")
    return matching[0]


def _listing(paths: list[str], problems: list[str]) -> str:
    quants = available_quants(paths)
    if not quants:
        return ""
    return "; available: " + ", ".join(quants)
