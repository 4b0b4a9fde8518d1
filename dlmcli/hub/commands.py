"""CLI commands for models: pull, models, info, rm, config. Results to stdout, progress and hints to stderr.

Errors are raised as DlmError subclasses; the app's error boundary prints them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence, Set as AbstractSet
from typing import Annotated

import click
import typer
from rich.console import Console

from ..errors import ModelError, UsageError

from . import config as cfg
from .manage import list_models, remove
from .spec import parse_spec

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _err() -> Console:
    # soft_wrap: a note piped to a file or a log stays one line (Rich would wrap it at 80 columns).
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _size(n: int | None, approx: bool = False) -> str:
    from .download import human_bytes

    if n is None:
        return ""
    return ("~" if approx else "") + human_bytes(n)


def pull(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Catalog name, owner/repo[:QUANT] or owner/repo:FILE.gguf.")],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    revision: Annotated[str, typer.Option("--revision", metavar="REV", help="A branch, tag or commit of the repo.")] = "main",
) -> None:
    """Download a model into the Hugging Face cache (resumes an interrupted pull). Prints the local path."""
    from .download import PullProgress, human_bytes
    from .download import pull as do_pull

    ref = parse_spec(model)
    if ref.kind != "hub":
        _err().print(f"{model} is a local file; nothing to pull")
        typer.echo(str(ref.path))
        return
    if quiet:
        progress = PullProgress()
    else:
        from .progress import RichPullProgress

        progress = RichPullProgress(_err())
    result = do_pull(ref, progress=progress, revision=revision)
    err = _err()
    if result.downloaded:
        err.print(
            f"pulled {model}: {human_bytes(result.downloaded)} downloaded"
            + (f", {human_bytes(result.reused)} already on disk" if result.reused else "")
        )
    elif result.checked_remote:
        err.print(f"{model} is up to date")
    typer.echo(str(result.model.path))


def models(
    as_json: JsonOpt = False,
    downloaded: Annotated[bool, typer.Option("--downloaded", "-d", help="Only models on this machine.")] = False,
) -> None:
    """List bundled models, the catalog, and what has been pulled."""
    rows = list_models()
    if downloaded:
        rows = [r for r in rows if r.status in ("bundled", "downloaded")]
    default, _fallback, source = cfg.default_model_with_source()
    memory = [_row_memory(r) for r in rows]
    if as_json:
        typer.echo(json.dumps([{**r.to_dict(), "default": r.name == default, "memory": m[0], "memory_approx": m[1]}
                               for r, m in zip(rows, memory)], indent=2))
        return
    lines = [("MODEL", "ARCH", "QUANT", "SIZE", "MEMORY", "LICENSE", "STATUS")]
    for r, (need, approx) in zip(rows, memory):
        status = {"available": "", "downloaded": "downloaded", "bundled": "bundled"}.get(r.status, r.status)
        if r.status == "partial" and r.progress is not None:
            status = f"partial {100 * r.progress:.0f}%"
        name = r.name + (" *" if r.name == default else "")
        mem = "" if need is None else _gib(need) + ("+" if approx else "")
        lines.append((name, r.arch or "", r.quant or "", _size(r.size, r.approx), mem, r.license or "", status))
    typer.echo(_columns(lines, right={3, 4}))
    marked = "* " if any(r.name == default for r in rows) else ""
    _err().print(f"{marked}default model: {default} ({source}); pull one with 'dlm pull NAME'", style="dim")


def _row_memory(r) -> tuple[int | None, bool]:
    """Memory a `dlm models` row needs with the default canvas (host + GPU), and whether it is only a
    lower bound (a model not downloaded: the weights and dlm itself)."""
    if r.path and r.status in ("bundled", "downloaded"):
        from . import catalog_entry_for

        entry = catalog_entry_for(r.name)
        mem = _memory(r.path, r.name, entry, None)
        return (mem["host"] + mem["device"], False) if mem else (None, False)
    if r.size:
        from ..memory import PROCESS_OVERHEAD

        return r.size + PROCESS_OVERHEAD, True
    return None, False


def info(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="A .gguf path, a bundled or catalog name, or owner/repo[:QUANT].")],
    as_json: JsonOpt = False,
    template: Annotated[bool, typer.Option("--template", help="Print the model's chat template (its Jinja source) and nothing else.")] = False,
) -> None:
    """Show a model's GGUF metadata, its generation defaults and the memory it needs, without loading it.

    A catalog model that is not downloaded is described from the catalog."""
    from . import catalog_entry_for, resolve_model
    from .ggufinfo import read_info

    entry = catalog_entry_for(model)
    ref = parse_spec(model)
    if entry is not None and ref.kind == "hub" and ref.filename is None and ref.quant is None:
        from . import find_local

        if find_local(ref) is None:  # nothing to read: what the catalog knows
            _catalog_info(model, entry, as_json, template)
            return
    path = resolve_model(model, pull_hint=False)  # info has no --pull to suggest
    meta = read_info(path)
    if template:
        if meta.chat_template_text is None:
            raise ModelError(f"{model} has no chat template (dlm then feeds the prompt as plain text)")
        typer.echo(meta.chat_template_text)
        return
    from ..defaults import file_hints

    hints = file_hints(meta.dlm_keys.get, meta.architecture)
    params, where, problem = _generation(meta.architecture, entry, hints)
    mem = _memory(path, model, entry, params)
    if as_json:
        data = {"model": model, **meta.to_dict(), "catalog": entry.to_dict() if entry else None,
                "generation_defaults": _generation_json(params, where, problem), "memory": mem}
        typer.echo(json.dumps(data, indent=2))
        return

    def yes_no(v: bool | None) -> str:
        return "" if v is None else ("yes" if v else "no")

    def num(v) -> str:
        return "" if v is None else str(v)

    mask = num(meta.mask_token_id) + (f" {meta.mask_token!r}" if meta.mask_token is not None else "")
    experts = ""
    if meta.expert_count:
        experts = f"{meta.expert_count}" + (f" ({meta.expert_used_count} active)" if meta.expert_used_count else "")
    rows = [
        ("model", model),
        ("file", meta.path if len(meta.files) == 1 else f"{meta.path} (+{len(meta.files) - 1} shards)"),
        ("size", _size(meta.size)),
        ("architecture", meta.architecture or "?"),
        ("name", meta.name or ""),
        ("parameters", _params(meta.parameters)),
        ("quant", meta.quant or ""),
        ("context", num(meta.context_length)),
        ("layers", num(meta.block_count)),
        ("embedding", num(meta.embedding_length)),
        ("experts", experts),
        ("vocab", num(meta.vocab_size)),
        ("mask token", mask),
        ("shift logits", yes_no(meta.shift_logits)),
        ("causal attention", yes_no(meta.causal_attention)),
        (
            "bos / eos / eot",
            " / ".join(num(t) or "-" for t in (meta.bos_token_id, meta.eos_token_id, meta.eot_token_id)),
        ),
        ("chat template", f"yes ({len(meta.chat_template_text or '')} characters; --template prints it)"
         if meta.chat_template else "no"),
        ("license", meta.license or (entry.license if entry else "")),
        ("catalog", f"{entry.name} ({entry.repo})" if entry else ""),
        ("dlm keys", ", ".join(f"{k}={_short(v)}" for k, v in meta.dlm_keys.items())),
        ("memory", _memory_text(mem)),
    ]
    if entry is not None and entry.prompt_format:
        rows.append(("prompt format", json.dumps(entry.prompt_format)))
    typer.echo(_columns([(k, v) for k, v in rows if v != ""]))
    typer.echo("")
    typer.echo(_generation_text(params, where, problem))


def _catalog_info(model: str, entry, as_json: bool, template: bool) -> None:
    """`dlm info` of a catalog model not downloaded: what the catalog says, and how to get the file."""
    if template:
        raise ModelError(f"model {model} is not downloaded and its chat template is inside the file; "
                         f"run 'dlm pull {model}'")
    params, where, problem = _generation(entry.arch, entry, {})
    from ..memory import PROCESS_OVERHEAD

    need = int(entry.size_gb * 1e9) + PROCESS_OVERHEAD
    if as_json:
        data = {"model": model, "downloaded": False, "catalog": entry.to_dict(),
                "generation_defaults": _generation_json(params, where, problem),
                "memory": {"at_least": need, "note": "weights and dlm; the canvas buffers need the file's shape"}}
        typer.echo(json.dumps(data, indent=2))
        return
    rows = [
        ("model", model),
        ("status", f"not downloaded; 'dlm pull {model}' fetches it"),
        ("catalog", f"{entry.name} ({entry.repo})"),
        ("description", entry.description),
        ("architecture", entry.arch),
        ("quant", entry.quant),
        ("size", f"~{entry.size_gb:g} GB"),
        ("chat", "yes (instruction tuned)" if entry.chat else "no (a base model)"),
        ("license", entry.license),
        ("prompt format", json.dumps(entry.prompt_format) if entry.prompt_format else ""),
        ("memory", f"at least ~{_gib(need)} (the weights and dlm; more for the canvas)"),
    ]
    typer.echo(_columns([(k, v) for k, v in rows if v != ""]))
    typer.echo("")
    typer.echo(_generation_text(params, where, problem))


def _generation(arch, entry, hints: dict):
    from ..defaults import sources

    return sources(arch, entry.overrides if entry else {}, hints)


# Shown for every schedule; the schedule's own knob (block_length or eps) is added after it.
_SHOWN = ("gen_length", "steps", "schedule", "algorithm", "alg_temp", "temperature", "top_k", "top_p", "cfg",
          "threshold", "factor", "early_stop", "seed")


def _shown_fields(params) -> list[str]:
    own = "block_length" if params.schedule == "block" else "eps"
    fields = list(_SHOWN)
    fields.insert(fields.index("schedule") + 1, own)
    return [f for f in fields if getattr(params, f) is not None]


def _generation_json(params, where: dict, problem: str) -> dict:
    if params is None:
        return {"error": problem}
    return {f: {"value": getattr(params, f), "source": where.get(f, "dlm")} for f in _shown_fields(params)}


def _generation_text(params, where: dict, problem: str) -> str:
    if params is None:
        return f"generation defaults: unusable ({problem})"
    rows = [("generation defaults", "value", "from")]
    for f in _shown_fields(params):
        rows.append(("  " + f, str(getattr(params, f)).lower() if isinstance(getattr(params, f), bool)
                     else str(getattr(params, f)), where.get(f, "dlm")))
    return _columns(rows) + "\n(flags such as -n and --steps override them; 'dlm generate -v' notes any value it fits)"


def _memory(path, model: str, entry, params) -> dict | None:
    """The memory check's figures for the default canvas, as a dict (None when the file's shape is unknown)."""
    from ..api import memory_budget

    try:
        budget = memory_budget(path, model, catalog=entry.overrides if entry else None)
    except Exception:  # noqa: BLE001 (info must describe the file even when this estimate cannot)
        return None
    if budget is None:
        return None
    canvas = min(budget.default_canvas, budget.shape.n_ctx or budget.default_canvas)
    est = budget.estimate(canvas)
    free = budget.free
    return {"canvas_tokens": canvas, "host": est.host, "device": est.device, "weights": est.weights_host +
            est.weights_device, "context": est.context, "gpu_layers": est.gpu_layers,
            "free_host": free.host, "free_source": free.source, "free_gpu": free.gpu if free.gpus else None,
            "fits": (free.host is None or est.host <= free.host) and (not est.device or est.device <= free.gpu)}


def _memory_text(mem: dict | None) -> str:
    if mem is None:
        return ""
    where = f"{_gib(mem['device'])} GPU + {_gib(mem['host'])} host" if mem["device"] else f"{_gib(mem['host'])}"
    free = f"{_gib(mem['free_host'])} free ({mem['free_source']})" if mem["free_host"] is not None else "free memory unknown"
    if mem["free_gpu"] is not None:
        free += f", {_gib(mem['free_gpu'])} GPU free"
    verdict = "" if mem["fits"] else "; too much: 'dlm generate' will refuse it (see --no-memory-check)"
    return (f"~{where} for a canvas of {mem['canvas_tokens']} tokens (weights {_gib(mem['weights'])}, "
            f"buffers {_gib(mem['context'])}); {free}{verdict}")


def _gib(n: int) -> str:
    from ..memory import gib

    return gib(n)


def _short(v) -> str:
    text = str(v)
    return text if len(text) <= 16 else text[:12] + "…"


def _columns(rows: Sequence[tuple[str, ...]], right: AbstractSet[int] = frozenset()) -> str:
    """Plain aligned columns: stays intact when piped, whatever the terminal width."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def _params(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f} B"
    if n >= 1e6:
        return f"{n / 1e6:.1f} M"
    return f"{n:,}"


def rm(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="A pulled model: catalog name or owner/repo[:QUANT].")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a pulled model (every shard) and any unfinished download of it from the cache."""
    from . import find_local
    from .download import human_bytes

    ref = parse_spec(model)
    if not yes and ref.kind == "hub":
        from . import pending_for

        local = find_local(ref)
        if local is not None or pending_for(ref) is not None:  # otherwise remove() explains what there is not
            size = f" ({human_bytes(local.size)})" if local is not None else ""
            if not sys.stdin.isatty():
                raise UsageError(f"dlm rm asks before deleting and stdin is not a terminal; "
                                 f"pass -y to remove {model}{size}")
            try:
                ok = typer.confirm(f"Remove {model}{size}?", default=False, err=True)
            except click.exceptions.Abort:  # Ctrl-D at the question
                ok = False
            if not ok:
                _err().print(f"kept {model}; nothing removed")
                raise typer.Exit(1)
    removed = remove(model)
    _err().print(f"removed {model}: {len(removed.files)} file(s), {human_bytes(removed.freed)} freed")


config_app = typer.Typer(help="Read or change dlm's settings (the default model).", no_args_is_help=True)


@config_app.command("get")
def config_get(key: Annotated[str, typer.Argument(metavar="KEY", help="Setting name: model.")] = "model") -> None:
    """Print the value in effect (for model: DLM_MODEL, then the config file, then the bundled model)."""
    if key == "model":
        value, _fallback, source = cfg.default_model_with_source()
        typer.echo(value)
        _err().print(f"from {source}", style="dim")
        return
    setting = cfg.get_value(key)
    if setting is not None:
        typer.echo(setting)


@config_app.command("set")
def config_set(
    key: Annotated[str, typer.Argument(metavar="KEY", help="Setting name: model.")],
    value: Annotated[str, typer.Argument(metavar="VALUE", help="The value, e.g. a model name.")],
) -> None:
    """Store a setting in the config file."""
    if key == "model":
        ref = parse_spec(value)  # refuse what could never resolve
        if ref.kind == "path":  # a relative path would break from any other directory
            assert ref.path is not None
            value = str(ref.path.resolve())
        if ref.kind == "hub":
            from . import find_local

            if find_local(ref) is None:
                _err().print(f"note: {value} is not downloaded yet; run 'dlm pull {value}'", style="dim")
    path = cfg.set_value(key, value)
    _err().print(f"{key} = {value} ({path})", style="dim")


@config_app.command("unset")
def config_unset(key: Annotated[str, typer.Argument(metavar="KEY", help="Setting name: model.")]) -> None:
    """Remove a setting from the config file."""
    path = cfg.set_value(key, None)
    _err().print(f"{key} unset ({path})", style="dim")


@config_app.command("path")
def config_path() -> None:
    """Print where the config file is (it may not exist yet)."""
    typer.echo(str(cfg.config_path()))


def register(app: typer.Typer) -> None:
    """Add pull, models, info, rm and config to the dlm app."""
    app.command("pull")(pull)
    app.command("models")(models)
    app.command("info")(info)
    app.command("rm")(rm)
    app.add_typer(config_app, name="config")
