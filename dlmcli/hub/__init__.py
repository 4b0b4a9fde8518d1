"""Model references: .gguf paths, bundled and catalog names, and Hub repos pulled into the HF cache.

The rest of dlm needs three things from here: ``resolve_model`` (MODEL -> local .gguf to load),
``default_model`` (what to use without -m) and ``catalog_entry_for`` (family defaults for a MODEL).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import HubError, ModelError
from . import cache
from .catalog import CATALOG, CatalogEntry, family_defaults
from .config import default_model
from .manage import find_local, pending_for
from .spec import BUNDLED_DIR, ModelRef, bundled_models, parse_spec

__all__ = [
    "BUNDLED_DIR",
    "CATALOG",
    "CatalogEntry",
    "ModelRef",
    "bundled_models",
    "catalog_entry_for",
    "default_model",
    "family_defaults",
    "parse_spec",
    "resolve_model",
]


def resolve_model(spec: str, *, allow_pull: bool = False, progress=None, pull_hint: bool = True) -> Path:
    """Return the local .gguf to load for MODEL (the first shard of a split model).

    Never touches the network for a model already in the cache. With ``allow_pull`` a missing hub model is
    pulled first (progress on stderr unless ``progress`` is given). Raises ModelError or HubError whose message
    says what to do next.
    """
    ref = parse_spec(spec)
    if ref.kind in ("path", "bundled"):
        assert ref.path is not None
        return ref.path
    local = find_local(ref)
    if local is not None:
        return local.path
    if allow_pull and not cache.offline_mode():
        from .download import pull

        if progress is None:
            from .progress import RichPullProgress

            progress = RichPullProgress()
        return pull(ref, progress=progress).model.path
    raise _not_downloaded(ref, pull_hint)


def _not_downloaded(ref: ModelRef, pull_hint: bool = True) -> ModelError | HubError:
    if cache.offline_mode():
        return HubError(
            f"model {ref.spec} is not downloaded and HF_HUB_OFFLINE is set; "
            f"unset HF_HUB_OFFLINE and run 'dlm pull {ref.spec}'"
        )
    pending = pending_for(ref)
    if pending is not None and pending.total:
        pct = 100 * pending.bytes_on_disk() / pending.total
        return ModelError(
            f"model {ref.spec} is only partly downloaded ({pct:.0f}%); "
            f"run 'dlm pull {ref.spec}' to resume" + (", or pass --pull" if pull_hint else "")
        )
    return ModelError(f"model {ref.spec} is not downloaded; run 'dlm pull {ref.spec}'"
                      + (" or pass --pull" if pull_hint else ""))


def catalog_entry_for(spec: str) -> CatalogEntry | None:
    """The catalog entry MODEL refers to (by short name or by its repo), or None for files and other repos."""
    try:
        ref = parse_spec(spec)
    except ModelError:
        return None
    return ref.entry
