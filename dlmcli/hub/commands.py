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
    model: Annotated[str, typer.Argument(help="Catalog name, owner/repo[:QUANT] or owner/repo:FILE.gguf.")],
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
    if as_json:
        typer.echo(json.dumps([{**r.to_dict(), "default": r.name == default} for r in rows], indent=2))
        return
    lines = [("MODEL", "ARCH", "QUANT", "SIZE", "LICENSE", "STATUS")]
    for r in rows:
        status = {"available": "", "downloaded": "downloaded", "bundled": "bundled"}.get(r.status, r.status)
        if r.status == "partial" and r.progress is not None:
            status = f"partial {100 * r.progress:.0f}%"
        name = r.name + (" *" if r.name == default else "")
        lines.append((name, r.arch or "", r.quant or "", _size(r.size, r.approx), r.license or "", status))
    typer.echo(_columns(lines, right={3}))
    marked = "* " if any(r.name == default for r in rows) else ""
    _err().print(f"{marked}default model: {default} ({source}); pull one with 'dlm pull NAME'", style="dim")


def info(
    model: Annotated[str, typer.Argument(help="A .gguf path, a bundled or catalog name, or owner/repo[:QUANT].")],
    as_json: JsonOpt = False,
    template: Annotated[bool, typer.Option("--template", help="Print the model's chat template (its Jinja source) and nothing else.")] = False,
) -> None:
    """Show a model's GGUF metadata (architecture, size, quant, context, mask token...) without loading it."""
    from . import catalog_entry_for, resolve_model
    from .ggufinfo import read_info

    path = resolve_model(model, pull_hint=False)  # info has no --pull to suggest
    meta = read_info(path)
    entry = catalog_entry_for(model)
    if template:
        if meta.chat_template_text is None:
            raise ModelError(f"{model} has no chat template (dlm then feeds the prompt as plain text)")
        typer.echo(meta.chat_template_text)
        return
    if as_json:
        data = {"model": model, **meta.to_dict(), "catalog": entry.to_dict() if entry else None}
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
    ]
    if entry is not None:
        rows.append(("catalog", f"{entry.name} ({entry.repo})"))
        rows.append(("defaults", ", ".join(f"{k}={v}" for k, v in entry.defaults.items())))
        if entry.prompt_format:
            rows.append(("prompt format", json.dumps(entry.prompt_format)))
    typer.echo(_columns([(k, v) for k, v in rows if v != ""]))


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
    model: Annotated[str, typer.Argument(help="A pulled model: catalog name or owner/repo[:QUANT].")],
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
def config_get(key: Annotated[str, typer.Argument(help="Setting name: model.")] = "model") -> None:
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
    key: Annotated[str, typer.Argument(help="Setting name: model.")],
    value: Annotated[str, typer.Argument(help="The value, e.g. a model name.")],
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
def config_unset(key: Annotated[str, typer.Argument(help="Setting name: model.")]) -> None:
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
