"""The one place that imports llama.cpp: library loading, native log routing, backend init."""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal.signal/getsignal without their enum wrapping (below)
import ctypes
import signal
import sys
import threading
from typing import Any

from ..errors import Terminated


def _global_libstdcxx() -> None:
    """Put the C++ runtime in the process's global symbol scope before llama.cpp's libraries load.

    A CUDA build's libggml-cuda exports its own copy of libstdc++'s locale code. When libstdc++
    had already been loaded privately (numpy and torch link it), libllama's iostream calls ran
    that copy against libstdc++'s facet ids and model loading crashed (seen on an H100; see
    docs/import-order.md). Global symbols are searched first, so every library
    then binds to libstdc++ itself, whatever was imported before.
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libstdc++.so.6", mode=ctypes.RTLD_GLOBAL)
        except OSError:  # no shared libstdc++ (a static build): nothing to bind to wrongly
            pass


_global_libstdcxx()

import llama_cpp.llama_cpp as lib  # noqa: E402  (after the libstdc++ promotion above)

_lock = threading.Lock()
_state: dict[str, Any] = {"init": False, "verbose": False, "callback": None, "capture": None}
_LOG_ERROR = 4  # GGML_LOG_LEVEL_ERROR
_shown: set[str] = set()  # whole log lines already written under --verbose
_errors: list[str] = []  # the last few error lines, to explain a later failure (an RPC abort)


def _on_log(level: int, text: bytes, user_data) -> None:
    # Native logs go through Python so they can be silenced or kept off a live view.
    try:
        if not text:
            return
        if _state["capture"] is not None or level == _LOG_ERROR:
            line = text.decode("utf-8", "replace")
            if _state["capture"] is not None:
                _state["capture"].append(line)
            if level == _LOG_ERROR:
                del _errors[:-7]
                _errors.append(line)
        if _state["verbose"]:
            line = text.decode("utf-8", "replace")
            # llama.cpp repeats some warnings every forward pass ("decode: cannot decode batches with
            # this context"); a whole line already shown says nothing new.
            if line.endswith("\n") and len(line) > 24:
                if line in _shown:
                    return
                _shown.add(line)
            sys.stderr.write(line)
    except (KeyboardInterrupt, Terminated) as e:  # ctypes would print and drop it: keep it for later
        _keep(e)
    except Exception:  # never raise into C
        pass


def init(verbose: bool = False) -> None:
    """Route llama.cpp's logs (silent unless verbose) and initialise the backend once."""
    with _lock:
        _state["verbose"] = verbose
        if _state["callback"] is None:
            # Keep a reference: a collected ctypes callback would be called after free and crash.
            _state["callback"] = lib.llama_log_callback(_on_log)
            lib.llama_log_set(_state["callback"], ctypes.c_void_p(0))
        if not _state["init"]:
            lib.llama_backend_init()
            _state["init"] = True


def set_verbose(verbose: bool) -> None:
    _state["verbose"] = verbose


def is_verbose() -> bool:
    return _state["verbose"]


def recent_errors() -> list[str]:
    return list(_errors)


class capture_log:
    """Context manager: collect llama.cpp's log lines (all levels) into ``self.lines`` meanwhile."""

    def __enter__(self):
        self.lines: list[str] = []
        self._old, _state["capture"] = _state["capture"], self.lines
        return self

    def __exit__(self, *exc):
        _state["capture"] = self._old
        return False

    @property
    def text(self) -> str:
        return "".join(self.lines)


# --- Ctrl-C inside long native calls ------------------------------------------------------------
# Python runs its SIGINT handler only between bytecodes, so a Ctrl-C during a multi-second forward
# pass or model load would wait for it to end. While such a call runs, SIGINT only sets a flag;
# llama.cpp polls it through its abort/progress callbacks and stops early; we then raise.
# A KeyboardInterrupt raised inside any ctypes callback would be printed and dropped by ctypes, so
# the callbacks turn it into the flag too; the flag is raised at the end of the next interruptible
# call (model load, context creation, forward pass).
# The flag holds the signal (SIGINT, or SIGTERM, which unwinds the same way: errors.Terminated).
_interrupted = {"flag": 0}


def _set_flag(signum, _frame=None) -> None:
    _interrupted["flag"] = _interrupted["flag"] or signum  # the first signal decides


def _keep(e: BaseException) -> None:
    _set_flag(signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT)


def _abort_requested(data) -> bool:
    # DATA points at the context's own abort flag (Runtime.abort), set from any thread.
    try:
        return bool(_interrupted["flag"]) or bool(data and ctypes.c_int.from_address(data).value)
    except (KeyboardInterrupt, Terminated) as e:
        _keep(e)
        return True


def _keep_loading(_progress, _data) -> bool:
    try:
        return not _interrupted["flag"]
    except (KeyboardInterrupt, Terminated) as e:
        _keep(e)
        return False


abort_callback = lib.ggml_abort_callback(_abort_requested)
progress_callback = lib.llama_progress_callback(_keep_loading)

try:  # the C callback that reads the flag at every graph node and calls Python only now and then
    from . import _abort
except ImportError:  # not built (no compiler at install time): Python at every node, as before
    _abort = None  # type: ignore[assignment]

# How often a pass calls Python (signal handlers, Ctrl-C) at most: a Ctrl-C stops a pass within
# this plus one graph node.
ABORT_POLL_S = 0.01


class AbortHook(ctypes.Structure):
    """The data of _abort's callback (its C struct ``hook``)."""

    _fields_ = [("flag", ctypes.POINTER(ctypes.c_int)), ("poll", ctypes.c_void_p), ("poll_data", ctypes.c_void_p),
                ("period_ns", ctypes.c_int64), ("last_ns", ctypes.c_int64)]


_C_HOOK = _abort is not None and _abort.LAYOUT == (
    ctypes.sizeof(AbortHook), *(getattr(AbortHook, f[0]).offset for f in AbortHook._fields_))


def set_abort_callback(ctx_ptr, flag: ctypes.c_int):
    """Make llama.cpp stop CTX_PTR's passes when FLAG is set or a signal arrives (see interruptible).
    Returns what must live as long as the context (keep a reference)."""
    if _C_HOOK:
        hook = AbortHook(ctypes.pointer(flag), ctypes.cast(abort_callback, ctypes.c_void_p), ctypes.addressof(flag),
                         int(ABORT_POLL_S * 1e9), 0)
        lib.llama_set_abort_callback(ctx_ptr, ctypes.cast(_abort.ADDRESS, lib.ggml_abort_callback),
                                     ctypes.addressof(hook))
        return hook
    lib.llama_set_abort_callback(ctx_ptr, abort_callback, ctypes.addressof(flag))
    return flag


_SIGNALS = (int(signal.SIGINT), int(signal.SIGTERM))


class interruptible:
    """Context manager: turn SIGINT (and SIGTERM, when dlm handles it) into the flag during a native call."""

    def __enter__(self):
        self._old = {}  # the flag is not cleared: a signal caught by a callback earlier still counts
        self._main = threading.current_thread() is threading.main_thread()
        if self._main:
            # _signal, not signal: the enum conversions of signal.signal cost more than the calls,
            # and this runs twice per forward pass (a tiny model's pass is 3 ms)
            for sig in _SIGNALS:
                if callable(_signal.getsignal(sig)):  # only where Python handles it (not ignored, not default)
                    self._old[sig] = _signal.signal(sig, _set_flag)
            _main_call["serial"] += 1
            _main_call["inside"] = True
        return self

    def __exit__(self, exc_type, exc, tb):
        if self._main:
            _main_call["inside"] = False
        for sig, old in self._old.items():
            _signal.signal(sig, old)
        got = _interrupted["flag"]
        if got:
            _interrupted["flag"] = 0
            if exc_type is None or not issubclass(exc_type, (KeyboardInterrupt, Terminated)):
                raise Terminated() if got == signal.SIGTERM else KeyboardInterrupt
        return False


def call_interruptibly(fn, *args, free):
    """``fn(*args)`` inside ``interruptible()``, returning its pointer; if a signal unwinds after the
    call succeeded (it landed during the call, the raise comes at its end), ``free`` the pointer."""
    ptr = None
    try:
        with interruptible():
            ptr = fn(*args)
    except (KeyboardInterrupt, Terminated):
        if ptr:
            free(ptr)
        raise
    return ptr


# --- a native call that never looks at the flag --------------------------------------------------
# A forward pass waiting on an RPC host that stopped answering calls back into Python never, so the
# flag is never read and Ctrl-C would do nothing. Once escape_stuck_calls() is on, a thread watches
# the signals (through Python's wakeup fd): if the main thread is still in the same native call a
# few seconds after a SIGINT or SIGTERM, the process ends with the usual line and status.
_main_call = {"inside": False, "serial": 0}
_escape: dict[str, Any] = {"on": False}
ESCAPE_GRACE_S = 3.0


def escape_stuck_calls(grace: float = ESCAPE_GRACE_S) -> bool:
    """Turn on the watch (main thread only, and only if nothing else uses the wakeup fd); True if on."""
    import socket

    if _escape["on"]:
        return True
    if threading.current_thread() is not threading.main_thread():
        return False
    r, w = socket.socketpair()
    w.setblocking(False)
    try:
        old = signal.set_wakeup_fd(w.fileno(), warn_on_full_buffer=False)
    except ValueError:
        r.close()
        w.close()
        return False
    if old != -1:  # an event loop owns it: leave it to them
        signal.set_wakeup_fd(old)
        r.close()
        w.close()
        return False
    _escape.update(on=True, sockets=(r, w))
    threading.Thread(target=_watch, args=(r, grace), name="dlm-signal-watch", daemon=True).start()
    return True


def _watch(r, grace: float) -> None:
    import os
    import time

    while True:
        try:
            data = r.recv(64)
        except OSError:
            return
        if not data:
            return
        for signum in data:
            if signum not in (signal.SIGINT, signal.SIGTERM) or not _main_call["inside"]:
                continue
            serial = _main_call["serial"]
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                if not _main_call["inside"] or _main_call["serial"] != serial:
                    break
                time.sleep(0.05)
            else:
                term = signum == signal.SIGTERM
                prefix = "\n\x1b[?25h" if os.isatty(2) else ""  # below a live view, cursor shown again
                os.write(2, f"{prefix}{'Terminated.' if term else 'Interrupted.'}\n".encode())
                os._exit(143 if term else 130)


def build_info() -> dict:
    """What llama.cpp this is: llama-cpp-python's version, ggml's version and commit, the backends
    registered (CPU, CUDA, Metal, RPC...) and the devices they offer, with their memory."""
    from importlib.metadata import PackageNotFoundError, version

    init(False)
    out: dict = {}
    try:
        out["llama_cpp_python"] = version("llama_cpp_python")
    except PackageNotFoundError:
        out["llama_cpp_python"] = getattr(sys.modules.get("llama_cpp"), "__version__", "?")
    for name in ("ggml_version", "ggml_commit"):
        fn = getattr(lib._lib, name, None)  # dlsym on libllama also finds the ggml it was linked with
        if fn is not None:
            fn.restype, fn.argtypes = ctypes.c_char_p, []
        out[name] = (fn() or b"?").decode() if fn is not None else "?"
    backends, devices = [], []
    c_int_fn = getattr(lib._lib, "ggml_backend_reg_count", None)
    if c_int_fn is not None:
        vp, cp = ctypes.c_void_p, ctypes.c_char_p
        c_int_fn.restype, c_int_fn.argtypes = ctypes.c_size_t, []
        reg_get = lib._lib.ggml_backend_reg_get
        reg_get.restype, reg_get.argtypes = vp, [ctypes.c_size_t]
        reg_name = lib._lib.ggml_backend_reg_name
        reg_name.restype, reg_name.argtypes = cp, [vp]
        backends = [(reg_name(reg_get(i)) or b"?").decode() for i in range(c_int_fn())]
    for d in device_memory():
        devices.append(f"{d['name']} ({d['description']}, {d['free'] / 2**30:.1f} of {d['total'] / 2**30:.1f} GiB free)"
                       if d["total"] else f"{d['name']} ({d['description']})")
    out["backends"], out["devices"] = backends or ["?"], devices or ["?"]
    return out


def device_memory() -> list[dict]:
    """Every ggml device with its free and total memory in bytes (host memory for the CPU)."""
    fns = {}
    for name, restype, argtypes in (("ggml_backend_dev_count", ctypes.c_size_t, []),
                                    ("ggml_backend_dev_get", ctypes.c_void_p, [ctypes.c_size_t]),
                                    ("ggml_backend_dev_name", ctypes.c_char_p, [ctypes.c_void_p]),
                                    ("ggml_backend_dev_description", ctypes.c_char_p, [ctypes.c_void_p]),
                                    ("ggml_backend_dev_type", ctypes.c_int, [ctypes.c_void_p]),
                                    ("ggml_backend_dev_memory", None, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t),
                                                                       ctypes.POINTER(ctypes.c_size_t)])):
        fn = getattr(lib._lib, name, None)
        if fn is None:
            return []
        fn.restype, fn.argtypes = restype, argtypes
        fns[name] = fn
    init(False)
    out = []
    for i in range(fns["ggml_backend_dev_count"]()):
        d = fns["ggml_backend_dev_get"](i)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        fns["ggml_backend_dev_memory"](d, ctypes.byref(free), ctypes.byref(total))
        out.append({"name": (fns["ggml_backend_dev_name"](d) or b"").decode(),
                    "description": (fns["ggml_backend_dev_description"](d) or b"").decode(),
                    "type": int(fns["ggml_backend_dev_type"](d)), "free": int(free.value), "total": int(total.value)})
    return out
