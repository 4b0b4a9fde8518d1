"""The one place that imports llama.cpp: library loading, native log routing, backend init."""

from __future__ import annotations

import ctypes
import sys
import threading


def _global_libstdcxx() -> None:
    """Put the C++ runtime in the process's global symbol scope before llama.cpp's libraries load.

    A CUDA build's libggml-cuda exports its own copies of some libstdc++ template code. When
    libstdc++ had already been loaded privately (numpy, torch and most extension modules link
    it), libllama bound to those copies and model loading crashed (docs/performance.md, "Import
    order"). Global symbols are searched first, so every library then binds to libstdc++ itself.
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
