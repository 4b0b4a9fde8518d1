"""The throttled abort callback (dlmcli/runtime/_abort.c): llama.cpp calls it after every graph node."""

from __future__ import annotations

import ctypes
import sys
import time

import numpy as np
import pytest

from dlmcli.hub import BUNDLED_DIR
from dlmcli.runtime import native

needs_hook = pytest.mark.skipif(native._abort is None, reason="abort callback not built")
POLL = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p)


@pytest.mark.skipif(sys.platform == "win32", reason="built with GCC and Clang")
def test_the_install_built_the_hook():
    # A silent fallback would only show as slower passes: Python called at every node.
    assert native._abort is not None and native._C_HOOK


def call(hook: native.AbortHook) -> bool:
    fn = ctypes.cast(native._abort.ADDRESS, POLL)
    return bool(fn(ctypes.addressof(hook)))


@needs_hook
def test_the_flag_is_read_at_every_call_and_python_only_once_a_period():
    calls = []
    answer = [False]

    @POLL
    def poll(data):
        calls.append(data)
        return answer[0]

    flag = ctypes.c_int(0)
    hook = native.AbortHook(ctypes.pointer(flag), ctypes.cast(poll, ctypes.c_void_p), 1234, int(0.2e9), 0)
    assert [call(hook) for _ in range(100)] == [False] * 100
    assert calls == [1234]  # the first call asks Python; the next 99 are inside the period
    flag.value = 1
    assert call(hook) and len(calls) == 1  # the context's flag needs no Python
    flag.value = 0
    answer[0] = True
    time.sleep(0.25)
    assert call(hook) and len(calls) == 2  # a period later Python is asked again, and its answer counts
    hook.poll = None
    time.sleep(0.25)
    assert not call(hook)


@needs_hook
@pytest.mark.skipif(not (BUNDLED_DIR / "tiny-llada.gguf").is_file(), reason="bundled tiny-llada missing")
def test_a_real_pass_stops_on_the_flag_and_on_a_signal():
    from dlmcli.api import load
    from dlmcli.runtime.llama import Aborted

    with load("tiny-llada") as m:
        rt = m.runtime
        canvas = np.array(m.prompt_tokens("reverse hello") + [m.vocab_info.mask_id] * 8, np.int32)
        rt.forward([canvas])
        lib = native.lib
        rt.ctx.abort_flag.value = 1  # what Runtime.abort sets, from a server's thread
        assert lib.llama_decode(rt.ctx.ptr, rt.batch.batch) == 2  # llama.cpp's "aborted"
        rt.ctx.abort_flag.value = 0
        assert lib.llama_decode(rt.ctx.ptr, rt.batch.batch) == 0
        rt.abort()
        with pytest.raises(Aborted):
            rt.forward([canvas])
        assert rt.forward([canvas])[0].shape[0] == len(canvas)  # usable again
        rt.ctx._abort_hook.last_ns = 0  # the next node asks Python (as the first pass in a while does)
        native._set_flag(2)  # what the SIGINT handler does during a pass
        assert lib.llama_decode(rt.ctx.ptr, rt.batch.batch) == 2
        rt.ctx._abort_hook.last_ns = 0
        with pytest.raises(KeyboardInterrupt):
            rt.forward([canvas])
        assert not native._interrupted["flag"]
