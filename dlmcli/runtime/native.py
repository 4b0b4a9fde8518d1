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
