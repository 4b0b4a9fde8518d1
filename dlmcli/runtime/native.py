"""The one place that imports llama.cpp: library loading, native log routing, backend init."""

from __future__ import annotations

import ctypes
import sys
import threading


def _global_libstdcxx() -> None:
    """Put the C++ runtime in the process's global symbol scope before llama.cpp's libraries load.

    A CUDA build's libggml-cuda exports its own copy of libstdc++'s locale code. When libstdc++
    had already been loaded privately (numpy and torch link it), libllama's iostream calls ran
    that copy against libstdc++'s facet ids and model loading crashed (seen on an H100; see
    docs/performance.md, "Import order"). Global symbols are searched first, so every library
    then binds to libstdc++ itself, whatever was imported before.
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libstdc++.so.6", mode=ctypes.RTLD_GLOBAL)
        except OSError:  # no shared libstdc++ (a static build): nothing to bind to wrongly
            pass


_global_libstdcxx()

import llama_cpp.llama_cpp as lib  # noqa: E402,F401  (loaded before numpy)

_lock = threading.Lock()
_state = {"init": False, "verbose": False, "callback": None}


def _on_log(level: int, text: bytes, user_data) -> None:
    # Native logs go through Python so they can be silenced or kept off a live view.
    try:
        if _state["verbose"] and text:
            sys.stderr.write(text.decode("utf-8", "replace"))
    except KeyboardInterrupt:  # a Ctrl-C handled here: ctypes would swallow it; keep it for later
        _interrupted["flag"] = True
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


# --- Ctrl-C inside long native calls ------------------------------------------------------------
# Python runs its SIGINT handler only between bytecodes, so a Ctrl-C during a multi-second forward
# pass or model load would wait for it to end. While such a call runs, SIGINT only sets a flag;
# llama.cpp polls it through its abort/progress callbacks and stops early; we then raise.
# A KeyboardInterrupt raised inside any ctypes callback would be printed and dropped by ctypes, so
# the callbacks turn it into the flag too; the flag is raised at the end of the next interruptible
# call (model load, context creation, forward pass).
_interrupted = {"flag": False}


def _abort_requested(_data) -> bool:
    try:
        return _interrupted["flag"]
    except KeyboardInterrupt:
        _interrupted["flag"] = True
        return True


def _keep_loading(_progress, _data) -> bool:
    try:
        return not _interrupted["flag"]
    except KeyboardInterrupt:
        _interrupted["flag"] = True
        return False


abort_callback = lib.ggml_abort_callback(_abort_requested)
progress_callback = lib.llama_progress_callback(_keep_loading)


class interruptible:
    """Context manager: turn SIGINT into a flag for the duration of a native call."""

    def __enter__(self):
        import signal

        self._old = None  # the flag is not cleared: a Ctrl-C caught by a callback earlier still counts
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, lambda *_: _interrupted.__setitem__("flag", True))
        return self

    def __exit__(self, exc_type, exc, tb):
        import signal

        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        if _interrupted["flag"]:
            _interrupted["flag"] = False
            if exc_type is None or exc_type is not KeyboardInterrupt:
                raise KeyboardInterrupt
        return False
