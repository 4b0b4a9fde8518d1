"""The ``dlm`` command: parse, call the API, hand events to sinks. No logic of its own."""

from __future__ import annotations

import errno
import functools
import inspect
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional, overload

import typer
from typer.core import TyperGroup

from .errors import DlmError, Terminated, UsageError
from .families import labels
from .placeholders import parse as parse_infill, parse_force
from .render import MAX_DELAY

class _BoundaryGroup(TyperGroup):
    """dlm's command group: every command it invokes (sub-apps such as 'config' included, and any
    command registered later) runs inside the one error boundary."""

    def invoke(self, ctx):
        return boundary(TyperGroup.invoke)(self, ctx)

    def get_command(self, ctx, cmd_name):
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            _plain_arguments(cmd)
        return cmd


def _no_type(ctx) -> None:
    return None


def _plain_arguments(cmd) -> None:
    """Help shows 'PROMPT  The prompt...', not Typer's 'PROMPT <str>': the argument's name and its help
    say what it is (and sub-apps such as 'config' the same)."""
    for p in getattr(cmd, "params", ()):
        if getattr(p, "param_type_name", "") == "argument":
            p.display_type_rich = _no_type
    for sub in getattr(cmd, "commands", {}).values():
        _plain_arguments(sub)


app = typer.Typer(
    name="dlm",
    cls=_BoundaryGroup,
    help=f"Run diffusion language models ({labels()}) from GGUF files and watch them denoise.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, what a shell reports for a process SIGTERM ended
# Writes that fail because of the machine (disk full, quota, I/O error), not because of a bug.
_WRITE_FAILURES = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG, errno.EROFS})


def _print_version(value: bool) -> None:
    if not value:
        return
    from . import __version__
    from .runtime.native import build_info

    info = build_info()
    typer.echo(f"dlm {__version__}")
    typer.echo(f"llama-cpp-python {info['llama_cpp_python']}")
    typer.echo(f"llama.cpp (ggml {info['ggml_version']}, commit {info['ggml_commit']})")
    typer.echo(f"backends: {', '.join(info['backends'])}")
    typer.echo(f"devices: {', '.join(info['devices'])}")
    raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the versions of dlm, llama-cpp-python and llama.cpp, and "
                                               "its backends, then exit.")] = False,
) -> None:
    pass  # the app's help says what dlm is (it names the families from dlmcli.families)


def err(message: str) -> None:
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()


def boundary(fn):
    """Turn user-facing failures into one 'Error: ...' line and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DlmError as e:
            err(f"Error: {e.cli_message()}")
            raise typer.Exit(e.exit_code) from None
        except (KeyboardInterrupt, Terminated) as e:
            raise typer.Exit(_report_signal(e)) from None
        except BrokenPipeError:
            _quiet_broken_pipe()
            raise typer.Exit(0) from None
        except OSError as e:
            if e.errno not in _WRITE_FAILURES:
                raise  # anything else is a bug: keep the traceback
            err(f"Error: cannot write {e.filename or 'the output'}: {e.strerror}")
            raise typer.Exit(1) from None

    return wrapper


def _report_signal(e: BaseException) -> int:
    """One line for a Ctrl-C or SIGTERM that unwound the command; returns the exit code."""
    if isinstance(e, Terminated):
        err("Terminated.")
        return EXIT_TERMINATED
    err("Interrupted.")
    return EXIT_INTERRUPTED


def _raise_terminated(_signum, _frame) -> None:
    raise Terminated()


def _handle_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C (the live view restores the terminal, a trace stays readable) and
    exits 143. Left alone when something set it otherwise (ignored, say, by the caller)."""
    import signal

    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_terminated)


def _quiet_broken_pipe() -> None:
    # The reader went away (| head): point stdout at /dev/null so the exit flush stays quiet.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


@overload
def check_utf8(text: str, what: str) -> str: ...
@overload
def check_utf8(text: None, what: str) -> None: ...
def check_utf8(text: Optional[str], what: str) -> Optional[str]:
    """Arguments arrive as bytes; Python keeps undecodable ones as lone surrogates. Refuse them here."""
    if text is not None:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raw = text.encode("utf-8", "surrogateescape")
            try:
                raw.decode("utf-8")
                start = None
            except UnicodeDecodeError as e:
                start = e.start
            where = f" (byte {start})" if start is not None else ""
            raise DlmError(f"{what} is not valid UTF-8{where}; convert it first, e.g. with iconv") from None
    return text


def read_prompt(argument: Optional[str], name: str = "PROMPT", *, stdin_too: bool = False) -> str:
    """PROMPT from the argument; stdin only when asked (the Unix rule, docs/reliability.md):
    PROMPT '-' or no PROMPT reads stdin; ``stdin_too`` (--stdin) puts stdin before PROMPT.
    A PROMPT alone never reads stdin, so a shell loop or an idle stdin (ssh, cron) cannot block it."""
    parts = []
    from_stdin = argument == "-"
    if argument is None:
        stdin = sys.stdin
        # A terminal is not a prompt: with nothing typed yet, say how to give one instead of waiting.
        from_stdin = stdin is not None and not stdin.closed and not stdin.isatty()
    if from_stdin or stdin_too:
        text = _read_stdin()
        if text:
            parts.append(text)
    if argument and argument != "-":
        parts.append(check_utf8(argument, f"the {name} argument"))
    if not parts:
        where = "stdin is empty" if from_stdin or stdin_too else f"pass {name} as an argument, or pipe it " \
            f"on stdin with no {name} or {name} '-'"
        raise UsageError(f"no {name.lower()}: {where}")
    return "\n\n".join(parts)


def _read_stdin() -> str:
    stdin = sys.stdin
    if stdin is None or stdin.closed:
        return ""
    data = stdin.buffer.read() if hasattr(stdin, "buffer") else stdin.read().encode()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DlmError(f"stdin is not valid UTF-8 (byte {e.start}); convert it first, e.g. with iconv") from None
    return text.rstrip("\n")


# Shared options, defined once.
ModelOpt = Annotated[Optional[str], typer.Option("-m", "--model", metavar="MODEL", help="A .gguf path or a model name (see 'dlm models').")]
NglOpt = Annotated[int, typer.Option("--ngl", metavar="N", help="Layers to offload to the GPU (-1: all).")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", metavar="N", min=1, max=512, help="CPU threads for llama.cpp and scoring (default: every core; for a tiny model's passes, the cores idle now).")]
VerboseOpt = Annotated[bool, typer.Option("-v", "--verbose", help="Show llama.cpp's log and run statistics.")]
# Where the layers go (docs/distributed.md): llama.cpp's RPC hosts and multi-device split.
RpcOpt = Annotated[Optional[str], typer.Option("--rpc", metavar="HOST:PORT,...", envvar="DLM_RPC", show_envvar=True, help="llama.cpp rpc-server hosts HOST:PORT[,HOST:PORT...] that take the model's layers (see 'dlm rpc-server').")]
SplitModeOpt = Annotated[Optional[str], typer.Option("--split-mode", metavar="none|layer|row", help="Spread the model over several devices: none, layer or row.")]
TensorSplitOpt = Annotated[Optional[str], typer.Option("--tensor-split", metavar="3,1,...", help="Share of the model per device, e.g. 3,1 (RPC hosts first, then local GPUs).")]
MainGpuOpt = Annotated[Optional[int], typer.Option("--main-gpu", metavar="N", help="Device index used with --split-mode none.")]
DEVICE_OPTIONS = ("rpc", "split_mode", "tensor_split", "main_gpu")
MemoryCheckOpt = Annotated[bool, typer.Option("--memory-check/--no-memory-check", help="Refuse to load a model that needs more memory than is free (RAM, cgroup limit, DLM_MEMORY_LIMIT, GPU); --no-memory-check loads it anyway.")]
CacheOpt = Annotated[str, typer.Option("--cache", metavar="off|prefix", help="off, or prefix: reuse the K/V before the current block within a block (faster, approximate; block schedule; see docs/kv-cache.md).")]


def open_model(model: Optional[str], ngl: int, threads: Optional[int], verbose: bool, pull: bool = False, *,
               rpc: Optional[str] = None, split_mode: Optional[str] = None, tensor_split: Optional[str] = None,
               main_gpu: Optional[int] = None, cache: str = "off", memory_check: bool = True,
               canvas: Optional[int] = None):
    from . import api
    from .hub.config import default_model_with_source

    if rpc is None:  # every command that loads a model honours DLM_RPC, with or without an --rpc option
        rpc = os.environ.get("DLM_RPC") or None
    load = functools.partial(api.load, n_gpu_layers=ngl, n_threads=threads, verbose=verbose, allow_pull=pull,
                             rpc=rpc, split_mode=split_mode, tensor_split=tensor_split, main_gpu=main_gpu,
                             cache=cache, memory_check=memory_check, canvas=canvas)
    if model is not None:
        m = load(model)
    else:
        model, fallback, source = default_model_with_source()
        if fallback:
            err(f"No model given; using the bundled {model} (set one with -m or DLM_MODEL).")
        try:
            m = load(model)
        except DlmError as e:
            if fallback:
                raise
            # The user typed no model: say where this one came from and how to change it.
            where = "DLM_MODEL (unset it or pass -m)" if source == "DLM_MODEL" else \
                f"the config file {source} (change it with 'dlm config set model NAME', or pass -m)"
            e.args = (f"{e} [the model {model!r} came from {where}]",)
            raise
    if verbose:
        placement = m.placement
        for line in placement.lines() if placement else ():
            err(f"placement: {line}")
    return m


@app.command()
def generate(
    prompt: Annotated[Optional[str], typer.Argument(metavar="PROMPT", help="The prompt; '-' or none: read it from stdin.", show_default=False)] = None,
    model: ModelOpt = None,
    gen_length: Annotated[Optional[int], typer.Option("-n", "--gen-length", metavar="N", help="Tokens to generate.")] = None,
    steps: Annotated[Optional[int], typer.Option("-s", "--steps", metavar="N", help="Denoising steps (forward passes).")] = None,
    block_length: Annotated[Optional[int], typer.Option("--block-length", metavar="N", help="Block size of the block schedule.")] = None,
    schedule: Annotated[Optional[str], typer.Option("--schedule", metavar="block|timestep", help="block (LLaDA) or timestep (Dream).")] = None,
    algorithm: Annotated[Optional[str], typer.Option("-a", "--algorithm", metavar="ALGORITHM", help="low-confidence, random, origin, margin or entropy (the authors' names work too: low_confidence, maskgit_plus, topk_margin).")] = None,
    alg_temp: Annotated[Optional[float], typer.Option("--alg-temp", metavar="T", help="Sample positions from softmax(confidence/T).")] = None,
    temperature: Annotated[Optional[float], typer.Option("-t", "--temperature", metavar="T", help="Token temperature (0: argmax).")] = None,
    top_k: Annotated[Optional[int], typer.Option("--top-k", metavar="K", help="Keep the k most likely tokens (0: off).")] = None,
    top_p: Annotated[Optional[float], typer.Option("--top-p", metavar="P", help="Nucleus filter in (0, 1].")] = None,
    cfg: Annotated[Optional[float], typer.Option("--cfg", metavar="SCALE", help="Classifier-free guidance scale (0: off).")] = None,
    eps: Annotated[Optional[float], typer.Option("--eps", metavar="EPS", help="Final noise level of the timestep schedule.")] = None,
    threshold: Annotated[Optional[float], typer.Option("--threshold", metavar="P", help="Also commit every position at least this confident (parallel decoding).")] = None,
    factor: Annotated[Optional[float], typer.Option("--factor", metavar="F", help="Fast-dLLM factor rule for parallel decoding.")] = None,
    early_stop: Annotated[Optional[bool], typer.Option("--early-stop/--no-early-stop", help="Stop once the answer has ended (never changes it).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", metavar="N", help="Seed for reproducible runs.")] = None,
    system: Annotated[Optional[str], typer.Option("--system", metavar="TEXT", help="System prompt for the chat template.")] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Skip the chat template: the prompt is the text.")] = False,
    stdin_too: Annotated[bool, typer.Option("--stdin", help="Also read stdin, and put it before PROMPT.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the answer.")] = False,
    stats: Annotated[bool, typer.Option("--stats", help="Print the run's statistics (steps, tokens, times) on stderr.")] = False,
    visual: Annotated[Optional[bool], typer.Option("--visual/--no-visual", help="Live view of the denoising (default: when stderr is a terminal).")] = None,
    delay: Annotated[float, typer.Option("--delay", metavar="SECONDS", min=0.0, max=MAX_DELAY, help="Seconds to pause between steps, to follow along.")] = 0.0,
    trace: Annotated[Optional[Path], typer.Option("--trace", metavar="FILE", help="Write every step to this JSON Lines file (see 'dlm replay'); '-': stdout, instead of the answer.")] = None,
    force: Annotated[Optional[list[str]], typer.Option("--force", metavar="POS:TEXT", help="POS:TEXT: pin TEXT at token offset POS of the answer (repeatable).")] = None,
    pull: Annotated[bool, typer.Option("--pull", help="Download the model first if it is not in the cache.")] = False,
    batch: Annotated[Optional[Path], typer.Option("--batch", metavar="FILE", help="Answer each line of FILE ('-': stdin), in order, one per line (JSON Lines with --json).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", metavar="N", min=1, help="With --batch: prompts that share one forward pass.")] = 8,
    ngl: NglOpt = -1,
    threads: ThreadsOpt = None,
    rpc: RpcOpt = None,
    split_mode: SplitModeOpt = None,
    tensor_split: TensorSplitOpt = None,
    main_gpu: MainGpuOpt = None,
    cache: CacheOpt = "off",
    memory_check: MemoryCheckOpt = True,
    verbose: VerboseOpt = False,
):
    """Generate an answer by denoising a canvas of masks."""
    check_utf8(system, "--system")
    overrides = dict(gen_length=gen_length, steps=steps, block_length=block_length, schedule=schedule,
                     algorithm=algorithm, alg_temp=alg_temp, temperature=temperature, top_k=top_k, top_p=top_p,
                     cfg=cfg, eps=eps, threshold=threshold, factor=factor, early_stop=early_stop, seed=seed)
    devices: dict[str, Any] = dict(rpc=rpc, split_mode=split_mode, tensor_split=tensor_split, main_gpu=main_gpu)
    canvas = _canvas_hint(gen_length)
    if batch is not None:
        if prompt is not None or visual or trace is not None or delay or force or stdin_too:
            # (--stats and --json apply per line)
            raise UsageError("--batch answers the file's prompts only: it takes no PROMPT, --visual, --trace, "
                             "--delay, --force or --stdin (they follow one generation)")
        prompts = read_batch(batch)
        with open_model(model, ngl, threads, verbose, pull, **devices, cache=cache,
                        memory_check=memory_check, canvas=canvas) as m:
            failed = _run_batch(m, prompts, batch_size, m.params(**overrides), system, raw, json_out,
                                verbose or stats)
        if failed:
            raise typer.Exit(1)
        return
    text = read_prompt(prompt, stdin_too=stdin_too)
    forced = [parse_force(check_utf8(f, "--force")) for f in force or ()]
    writer = _trace_writer(trace, json_out)  # a bad --trace path fails here, before the model loads
    try:
        with open_model(model, ngl, threads, verbose, pull, **devices, cache=cache,
                        memory_check=memory_check, canvas=canvas) as m:
            params, notes = m.params_with_notes(**overrides)
            if verbose:  # values dlm chose because the defaults did not fit what was set
                for note in notes:
                    err(f"note: {note}")
            gen = m.denoise(text, system=system, raw=raw, params=params, force=forced)
            result = _drive(gen, _sinks(m, gen, text, visual, delay=delay, trace=writer, fixed=gen.fixed))
    finally:
        if writer is not None:
            writer.close()
    _warn_cut_forces(gen, result)
    _emit(result, json_out, verbose or stats, answer=not _to_stdout(trace))
    if result.finish_reason == "length" and not json_out:
        err(f"Note: the answer reached --gen-length {result.params.gen_length} before it ended; it may be cut "
            f"short (pass a larger -n)")


def _canvas_hint(gen_length: Optional[int]) -> Optional[int]:
    """The canvas the memory check assumes before the prompt is tokenized (the exact one is checked later)."""
    from .memory import PROMPT_ALLOWANCE

    return gen_length + PROMPT_ALLOWANCE if gen_length is not None and gen_length > 0 else None


def _to_stdout(path) -> bool:
    return path is not None and str(path) == "-"


def _trace_writer(trace, json_out: bool = False):
    if trace is None:
        return None
    if _to_stdout(trace) and json_out:
        raise UsageError("--trace - and --json would both write stdout; the trace's end record holds the result, "
                         "so drop --json (or send the trace to a file)")
    from .render.trace import TraceWriter

    return TraceWriter(trace)


def _close_all(sinks) -> None:
    """Close every sink even if one fails (the live view must always give the terminal back)."""
    error = None
    for s in sinks:
        try:
            s.close()
        except BaseException as e:  # noqa: BLE001 (re-raised below)
            error = error or e
    if error is not None:
        raise error


def _warn_cut_forces(gen, result) -> None:
    # The answer ends at its first end-of-generation token, even one before a forced text.
    for start, end, text in gen.forced:
        if end > len(result.tokens):
            err(f"Warning: the answer ended at token {len(result.tokens)}, before --force {start}:{text}")


def borrow_options(source, names: tuple[str, ...]):
    """Give the decorated command SOURCE's options NAMES, so each option is defined once.

    The command takes them as ``**opts``; Typer reads the combined signature set here.
    """
    def decorate(fn):
        theirs = inspect.signature(source, eval_str=True).parameters
        own = inspect.signature(fn, eval_str=True)
        keep = [p for p in own.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        fn.__signature__ = own.replace(parameters=keep + [theirs[n] for n in names])
        return fn

    return decorate


_SAMPLING = ("steps", "block_length", "schedule", "algorithm", "alg_temp", "temperature", "top_k", "top_p",
             "cfg", "eps", "threshold", "factor", "seed")
_INFILL_SHARED = ("model",) + _SAMPLING + ("system", "stdin_too", "json_out", "stats", "visual", "delay", "trace",
                                           "pull", "ngl", "threads") + DEVICE_OPTIONS + ("cache", "memory_check",
                                                                                         "verbose")


@app.command()
@borrow_options(generate, _INFILL_SHARED)
def infill(
    text: Annotated[Optional[str], typer.Argument(metavar="TEXT", help="Text with [MASK] (one token) or [MASK:N] (N tokens) spans; \\[MASK is a literal. '-' or none: read it from stdin.", show_default=False)] = None,
    chat: Annotated[bool, typer.Option("--chat", help="Put the text in the assistant's turn of the chat template.")] = False,
    user: Annotated[Optional[str], typer.Option("--user", metavar="TEXT", help="With --chat: the user's turn before it.")] = None,
    **opts,
):
    """Fill the masked spans of a text; everything else is kept verbatim (see docs/infill.md)."""
    template = read_prompt(text, "TEXT", stdin_too=opts["stdin_too"])
    check_utf8(user, "--user")
    check_utf8(opts["system"], "--system")
    parse_infill(template)  # bad placeholders fail before a model is loaded
    o = opts
    writer = _trace_writer(o["trace"], o["json_out"])
    try:
        with open_model(o["model"], o["ngl"], o["threads"], o["verbose"], o["pull"],
                        **{k: o[k] for k in DEVICE_OPTIONS}, cache=o["cache"], memory_check=o["memory_check"]) as m:
            gen = m.infill(template, chat=chat, user=user, system=o["system"], **{k: o[k] for k in _SAMPLING})
            sinks = _sinks(m, gen, template, o["visual"], delay=o["delay"], trace=writer, fixed=gen.fixed)
            result = _drive(gen, sinks)
    finally:
        if writer is not None:
            writer.close()
    _emit(result, o["json_out"], o["verbose"] or o["stats"], answer=not _to_stdout(o["trace"]))


@app.command("rpc-server")
def rpc_server(
    host: Annotated[str, typer.Option("--host", metavar="HOST", help="IPv4 address to listen on (0.0.0.0: every interface; trusted networks only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", metavar="PORT", min=1, max=65535, help="TCP port to listen on.")] = 50052,
    device: Annotated[Optional[list[str]], typer.Option("--device", metavar="NAME", help="Device to serve, e.g. CUDA0 (repeatable; default: the GPUs, else the CPU).")] = None,
    cache: Annotated[Optional[Path], typer.Option("--cache", metavar="DIR", help="Keep received weights in DIR, so a restarted client does not resend them.")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", metavar="N", min=1, max=512, help="CPU threads when it serves the CPU (default: all cores).")] = None,
    verbose: VerboseOpt = False,
):
    """Lend this machine's devices to 'dlm ... --rpc' on other hosts (llama.cpp's RPC server)."""
    from . import api

    names = [n.strip() for d in device or () for n in d.split(",") if n.strip()]
    server = api.RpcServer(host, port, devices=names, cache_dir=cache, n_threads=threads, verbose=verbose)
    if not server.loopback:
        err(f"Warning: the RPC protocol has no authentication and no encryption: anyone who can reach "
            f"{host}:{port} can use this machine's devices and read or write their memory. Serve only on a "
            f"trusted network.")
    err(f"dlm rpc-server: serving {', '.join(server.device_labels)} on {host}:{port} "
        f"(llama.cpp RPC; Ctrl-C stops it)")
    try:
        server.run()
    except (KeyboardInterrupt, Terminated) as e:
        # llama.cpp's server thread cannot be stopped or joined; leave without Python's shutdown,
        # which would run C++ destructors under it.
        code = _report_signal(e)
        sys.stdout.flush()
        os._exit(code)


def _drive(gen, sinks: list):
    """Feed every step to every sink; return the result."""
    try:
        for step in gen:
            for s in sinks:
                s.step(step)
        result = gen.result()
        for s in sinks:
            s.finish(result)
    finally:
        _close_all(sinks)
    return result


def _sinks(m, gen, prompt_text: str, visual: Optional[bool], *, delay: float = 0.0,
           trace: Optional[Path] = None, fixed: tuple = (), transient: bool = False) -> list:
    from .render.base import RunInfo

    info = RunInfo(
        model=m.name, prompt=prompt_text, prompt_tokens=tuple(gen.prompt_tokens),
        canvas=tuple(int(t) for t in gen.initial_canvas), gen_start=gen.gen_start,
        mask_id=m.vocab_info.mask_id, params=gen.params.to_dict(),
        token_text=lambda t: m.runtime.piece(int(t)).decode("utf-8", "replace"),
        eog_ids=m.vocab_info.eog_ids, fixed=tuple(fixed),
    )
    sinks = []
    if trace is not None:  # a path, or a TraceWriter opened early by the caller
        sinks.append(_trace_writer(trace) if isinstance(trace, (str, os.PathLike)) else trace)
    if visual is None:
        visual = sys.stderr.isatty()
    if visual:
        from .render.live import LiveView

        sinks.append(LiveView(delay=delay, transient=transient))
    elif delay:
        from .render.live import Pause

        sinks.append(Pause(delay))
    started = []
    try:
        for s in sinks:
            s.start(info)
            started.append(s)
    except BaseException:
        _close_all(started)
        raise
    return sinks


def read_batch(path: Path) -> list[tuple[int, str]]:
    """--batch FILE: one prompt per line, as (line number, prompt); blank lines are skipped."""
    try:
        data = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read --batch file {path}: {e.strerror}") from None
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise UsageError(f"--batch file {path} is not valid UTF-8 (byte {e.start})") from None
    prompts = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    if not prompts:
        raise UsageError(f"--batch file {path} has no prompts")
    return prompts


def _run_batch(m, prompts: list[tuple[int, str]], batch_size: int, params, system, raw, json_out: bool,
               verbose: bool) -> int:
    """Answer every prompt, in order; a line that cannot run (too long, a mask token...) gets an error
    of its own and the others still run. Returns the number of lines that failed."""
    failed = 0
    for first in range(0, len(prompts), batch_size):
        group = prompts[first:first + batch_size]
        out: dict[int, object] = {}
        runs: list[list[tuple[int, list[int]]]] = [[]]  # contiguous good lines: sequence numbers stay stable
        for i, (_line, text) in enumerate(group, first):
            try:
                toks = m.prompt_tokens(text, system=system, raw=raw)
                m.check_prompt(toks, params)
            except DlmError as e:
                out[i] = e
                runs.append([])
                continue
            runs[-1].append((i, toks))
        for run in runs:
            if run:
                results = m.generate_batch(prompt_tokens=[t for _, t in run], params=params, first_index=run[0][0])
                out.update(zip([i for i, _ in run], results))
        for i, (line, _text) in enumerate(group, first):
            r = out[i]
            if isinstance(r, DlmError):
                failed += 1
                if json_out:
                    sys.stdout.write(json.dumps({"index": i, "line": line, "error": r.cli_message()}, ensure_ascii=False)
                                     + "\n")
                else:
                    sys.stdout.write("\n")  # keeps the answers in line with the prompts
                sys.stdout.flush()
                err(f"Error: --batch line {line}: {r.cli_message()}")
            else:
                _emit(r, json_out, verbose, index=i, line=line)
    return failed


def _emit(result, json_out: bool, stats: bool, index: int | None = None, line: int | None = None,
          answer: bool = True) -> None:
    if not answer:  # --trace -: stdout carries the trace
        pass
    elif json_out:
        obj = result.to_json() if index is None else {"index": index, "line": line, **result.to_json()}
        sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    elif index is not None:
        # --batch: one line per prompt, so line breaks inside an answer are escaped (--json keeps them).
        text = result.text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
        sys.stdout.write(text + "\n")
    else:
        sys.stdout.write(result.text + "\n")
    sys.stdout.flush()
    if stats:
        t = result.timings
        err(f"{result.steps} steps, {len(result.tokens)} tokens, {t.total_s:.2f}s "
            f"(forward {t.forward_s:.2f}s, host {t.sampling_s:.2f}s), finish: {result.finish_reason}")


def _register_extensions() -> None:
    # An import error here is a bug: it must show, not silently drop commands.
    from .hub.commands import register

    register(app)
    from .render.commands import register as register_render

    register_render(app)
    from .chat import register as register_chat

    register_chat(app)
    from .serve.commands import register as register_serve

    register_serve(app)


class _ClosedStdout:
    """sys.stdout when the shell closed it (>&-): the first write is one clear error."""

    encoding = "utf-8"
    errors = "strict"

    def write(self, text: str) -> int:
        raise DlmError("standard output is closed (>&-): there is nowhere to write the result")

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def _guard_std_streams() -> None:
    """Give closed fds 0-2 to /dev/null, so no file opened later (a trace, the model) takes their number."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free number: fd itself once those below are open
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stdout is None:
        sys.stdout = _ClosedStdout()
    if sys.stderr is None:  # 2>&-: messages are dropped, exit codes still tell
        sys.stderr = open(os.devnull, "w", encoding="utf-8")


def main() -> None:
    _guard_std_streams()
    _handle_sigterm()
    try:
        _register_extensions()
        app()
    except DlmError as e:  # raised outside a command (e.g. while registering)
        err(f"Error: {e.cli_message()}")
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, Terminated) as e:  # while starting up, before a command's boundary
        sys.exit(_report_signal(e))


if __name__ == "__main__":
    main()
