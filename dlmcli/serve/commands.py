"""``dlm serve``: load the models once, start one worker thread per model, run uvicorn.

SIGTERM and Ctrl-C stop accepting connections, let running requests finish for up to
``--shutdown-timeout`` seconds, then exit 0 (SIGTERM) or 130 (Ctrl-C); a second Ctrl-C quits at once.
"""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import UsageError

GENERATION_FLAGS = ("gen_length", "steps", "block_length", "schedule", "algorithm", "alg_temp", "temperature",
                    "top_k", "top_p", "cfg", "eps", "threshold", "factor", "early_stop", "seed")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _model_id(name: str) -> str:
    return Path(name).stem if name.endswith(".gguf") else name


def register(app: typer.Typer) -> None:
    from ..cli import DEVICE_OPTIONS, borrow_options, generate

    @app.command()
    @borrow_options(generate, ("ngl", "threads") + DEVICE_OPTIONS + ("memory_check", "verbose", "pull")
                    + GENERATION_FLAGS)
    def serve(
        model: Annotated[Optional[list[str]], typer.Option("-m", "--model", metavar="MODEL", help="A .gguf path or a model name; repeat to serve several (default: DLM_MODEL or the bundled model).")] = None,
        host: Annotated[str, typer.Option("--host", metavar="HOST", help="Address to bind (loopback by default).")] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port", metavar="PORT", min=0, max=65535, help="Port to listen on (0: any free port).")] = 8000,
        max_batch: Annotated[int, typer.Option("--max-batch", metavar="N", min=1, help="Sequences that share one forward pass, at most; more wait in a queue (see docs/serve.md for the trade-off).")] = 8,
        max_queue: Annotated[int, typer.Option("--max-queue", metavar="N", min=0, help="Sequences that may wait for a place; beyond it requests get 503 with Retry-After.")] = 256,
        api_key: Annotated[Optional[str], typer.Option("--api-key", metavar="KEY", envvar="DLM_API_KEY", show_envvar=True, help="Require 'Authorization: Bearer KEY' on every endpoint but /health.")] = None,
        shutdown_timeout: Annotated[float, typer.Option("--shutdown-timeout", metavar="SECONDS", min=0.0, help="Seconds running requests may take to finish once SIGTERM or Ctrl-C arrives.")] = 10.0,
        **opts,
    ):
        """Serve models over HTTP: OpenAI's chat/completions API, streaming the denoising; a playground at /."""
        from ..cli import DEVICE_OPTIONS, check_utf8, err, open_model

        if api_key is not None:
            check_utf8(api_key, "--api-key")
            if not api_key.strip():
                raise UsageError("--api-key is empty; pass a key or leave the option out")
        defaults = {k: opts[k] for k in GENERATION_FLAGS if opts.get(k) is not None}
        names: list[str | None] = list(model) if model else [None]
        ids = [_model_id(n) if n else None for n in names]
        if len({i for i in ids if i}) != len([i for i in ids if i]):
            raise UsageError("the same model is given twice with -m")
        with contextlib.ExitStack() as stack:
            loaded = []
            for name in names:
                m = stack.enter_context(open_model(name, opts["ngl"], opts["threads"], opts["verbose"], opts["pull"],
                                                   **{k: opts[k] for k in DEVICE_OPTIONS},
                                                   memory_check=opts["memory_check"]))
                m.params(**defaults)  # a bad server-wide default fails now, not on each request
                loaded.append(m)
            code = run_server(loaded, host=host, port=port, max_batch=max_batch, max_queue=max_queue,
                              api_key=api_key, defaults=defaults, shutdown_timeout=shutdown_timeout,
                              verbose=opts["verbose"], say=err)
        raise typer.Exit(code)


def run_server(models, *, host, port, max_batch, max_queue, api_key, defaults, shutdown_timeout, verbose, say) -> int:
    import uvicorn

    from .app import ServerState, Served, build_app
    from .metrics import Metrics
    from .worker import ModelWorker

    if not _is_loopback(host) and not api_key:
        say(f"Warning: serving on {host} without --api-key: anyone who can reach this address can use the "
            f"models. Set --api-key or DLM_API_KEY.")
    metrics = Metrics()
    served = {}
    for m in models:
        mid = _model_id(m.name)
        worker = ModelWorker(m, max_batch=max_batch, max_queue=max_queue, metrics=metrics, name=mid)
        served[mid] = Served(mid, m, worker, aliases=(m.name, str(m.path)))
        metrics.workers.append(worker)
    state = ServerState(served, defaults=defaults, api_key=api_key, metrics=metrics)
    app = build_app(state)
    config = uvicorn.Config(app, host=host, port=port, log_level="info" if verbose else "warning",
                            access_log=verbose, timeout_graceful_shutdown=shutdown_timeout, lifespan="off",
                            ws="none", loop="asyncio")
    server = _Server(config, on_ready=lambda addr: say(
        f"Serving {', '.join(served)} on http://{addr} (OpenAI API under /v1, playground at /; Ctrl-C to stop)"))
    for s in served.values():
        s.worker.start()
    try:
        server.run()
    except SystemExit:  # uvicorn exits when it cannot bind
        if server.started:
            raise
    finally:
        for s in served.values():
            s.worker.stop(abort=True)
    if server.signal_received == signal.SIGINT:
        say("Interrupted.")
        return 130
    if not server.started:
        say(f"Error: could not listen on {host}:{port} (in use, or not an address of this machine); "
            f"pick another --port or --host")
        return 1
    return 0


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, with our own signal handling: no re-raise of the signal after the
        graceful shutdown (uvicorn would), so SIGTERM exits 0 and Ctrl-C 130."""

        def __init__(self, config, on_ready):
            super().__init__(config)
            self.on_ready = on_ready
            self.signal_received = None

        @contextlib.contextmanager
        def capture_signals(self):
            old = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in old.items():
                    signal.signal(sig, handler)

        def _on_signal(self, sig, _frame):
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True  # a second Ctrl-C: stop waiting for running requests
            self.should_exit = True
            self.signal_received = self.signal_received or sig

        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started and self.servers:
                sock = self.servers[0].sockets[0]
                h, p = sock.getsockname()[:2]
                self.on_ready(f"[{h}]:{p}" if ":" in h else f"{h}:{p}")
                sys.stderr.flush()

    return Server


def _Server(config, on_ready):
    return _server_class()(config, on_ready)


