"""The one place that imports llama.cpp: library loading, native log routing, backend init."""

from __future__ import annotations

import ctypes
import sys
import threading

import llama_cpp.llama_cpp as lib  # noqa: F401  (loaded before numpy; see docs/performance.md)

_lock = threading.Lock()
_state = {"init": False, "verbose": False, "callback": None}


def _on_log(level: int, text: bytes, user_data) -> None:
    # Native logs go through Python so they can be silenced or kept off a live view.
    if _state["verbose"] and text:
        try:
            sys.stderr.write(text.decode("utf-8", "replace"))
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
_interrupted = {"flag": False}


def _abort_requested(_data) -> bool:
    return _interrupted["flag"]


def _keep_loading(_progress, _data) -> bool:
    return not _interrupted["flag"]


abort_callback = lib.ggml_abort_callback(_abort_requested)
progress_callback = lib.llama_progress_callback(_keep_loading)


class interruptible:
    """Context manager: turn SIGINT into a flag for the duration of a native call."""

    def __enter__(self):
        import signal

        _interrupted["flag"] = False
        self._old = None
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
