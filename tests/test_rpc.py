"""One model over several hosts: real 'dlm rpc-server' processes on loopback (CPU backend)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dlmcli.errors import UsageError
from dlmcli.runtime import rpc

from .conftest import ROOT, run_dlm, sigint_default


def sigint_default_handled() -> None:
    sigint_default()  # the child takes Ctrl-C as a terminal user's process does

HAVE_RPC = rpc.supported()
needs_rpc = pytest.mark.skipif(not HAVE_RPC, reason="llama-cpp-python built without -DGGML_RPC=on")


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("DLM_RPC", None)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A real 'dlm rpc-server' on a free loopback port."""

    def __init__(self, *args: str):
        self.port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dlmcli", "rpc-server", "--port", str(self.port), "--threads", "1", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, self.proc.stderr.read().decode()
            try:
                self.version = rpc.probe(rpc.Endpoint("127.0.0.1", self.port), timeout=2)
                break
            except rpc.RpcError:
                assert time.monotonic() < deadline, "rpc-server never answered"
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self.proc.stderr.close()


@pytest.fixture(scope="module")
def servers():
    if not HAVE_RPC:
        pytest.skip("llama-cpp-python built without -DGGML_RPC=on")
    started = []
    try:
        for _ in range(2):
            started.append(Server())
        yield started
    finally:
        for s in started:
            s.stop()


@pytest.fixture(scope="module")
def deep_model(tmp_path_factory) -> Path:
    """A random llada with several layers, so two hosts each get some."""
    from tools.ggufgen import write_random_gguf

    path = tmp_path_factory.mktemp("rpc") / "deep.gguf"
    write_random_gguf(path, "llada", seed=7, n_layer=6, std=0.5, context_length=128)
    return path


def _tokens(*args, env=None):
    r = run_dlm("generate", "--json", "--no-visual", "-t", "0", *args, env=env)
    assert r.returncode == 0, r.stderr.decode()
    return json.loads(r.stdout)["tokens"], r.stderr.decode()


# --- the same answer, locally and over one or two hosts ---------------------------------------------

@needs_rpc
@pytest.mark.parametrize("model,prompt,extra", [
    ("tiny-llada", "reverse hello", ()),
    ("tiny-dream", "add 12 30", ()),
    ("deep", "hi", ("--raw", "-n", "16", "-s", "8")),
])
@pytest.mark.slow
def test_rpc_gives_the_local_tokens(servers, deep_model, model, prompt, extra):
    m = str(deep_model) if model == "deep" else model
    local, _ = _tokens("-m", m, *extra, prompt)
    one, _ = _tokens("-m", m, "--rpc", servers[0].endpoint, *extra, prompt)
    # DLM_RPC works like --rpc; -v says where llama.cpp put the layers
    two, err = _tokens("-m", m, "-v", *extra, prompt, env={"DLM_RPC": f"{servers[0].endpoint},{servers[1].endpoint}"})
    assert one == local and two == local
    placed = [line for line in err.splitlines() if line.startswith("placement: ")]
    assert any(f"RPC0 ({servers[0].endpoint})" in line for line in placed), err
    assert any(f"RPC1 ({servers[1].endpoint})" in line for line in placed), err


@needs_rpc
@pytest.mark.slow
def test_tensor_split_moves_the_layers(servers, deep_model):
    """--tensor-split 1,0 puts every layer on the first host; the answer does not change."""
    both = f"{servers[0].endpoint},{servers[1].endpoint}"
    local, _ = _tokens("-m", deep_model, "--raw", "-n", "16", "-s", "8", "hi")
    toks, err = _tokens("-m", deep_model, "--raw", "-n", "16", "-s", "8", "--rpc", both,
                        "--split-mode", "layer", "--tensor-split", "1,0", "-v", "hi")
    placed = [line for line in err.splitlines() if line.startswith("placement: layer")]
    assert toks == local
    assert placed == [f"placement: layers 0-5: RPC0 ({servers[0].endpoint})"], placed


@pytest.mark.slow
def test_server_speaks_the_protocol_dlm_checks(servers):
    """The version the pre-flight expects is what this llama.cpp's own server answers."""
    assert servers[0].version == rpc.PROTOCOL


# --- failures: one line, exit 1, bounded time ----------------------------------------------------------

def _one_error_line(r) -> str:
    err = r.stderr.decode()
    assert r.returncode == 1 and r.stdout == b"", err
    assert err.count("\n") == 1 and err.startswith("Error: ") and "Traceback" not in err, err
    return err


@needs_rpc
@pytest.mark.slow
def test_refused_port_names_the_host():
    port = free_port()
    r = run_dlm("generate", "-m", "tiny-llada", "--rpc", f"127.0.0.1:{port}", "hi", timeout=60)
    err = _one_error_line(r)
    assert f"127.0.0.1:{port} refused the connection" in err


@needs_rpc
@pytest.mark.slow
def test_host_that_never_answers_the_handshake_fails_in_bounded_time():
    """A listener that accepts but never answers (a busy or wedged host): DLM_RPC_TIMEOUT bounds the wait."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        ep = f"127.0.0.1:{silent.getsockname()[1]}"
        r = run_dlm("generate", "-m", "tiny-llada", "--rpc", ep, "hi", env={"DLM_RPC_TIMEOUT": "1"}, timeout=60)
    err = _one_error_line(r)
    assert f"{ep} accepted the connection but did not answer the handshake within 1 s" in err


def _fake_server(major: int) -> tuple[socket.socket, str]:
    """A listener that answers ggml-rpc's HELLO with another protocol version, as an older or newer
    llama.cpp would (building a second llama.cpp here would take many minutes)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)

    def answer():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(1 + 8 + 24)
                conn.sendall((28).to_bytes(8, "little") + bytes([major, 0, 0, 0]) + bytes(24))

    threading.Thread(target=answer, daemon=True).start()
    return sock, f"127.0.0.1:{sock.getsockname()[1]}"


@needs_rpc
@pytest.mark.slow
def test_protocol_version_mismatch_names_both_versions():
    sock, ep = _fake_server(rpc.PROTOCOL[0] + 1)
    with sock:
        r = run_dlm("generate", "-m", "tiny-llada", "--rpc", ep, "hi", timeout=60)
    err = _one_error_line(r)
    assert f"rpc host {ep} speaks RPC protocol {rpc.PROTOCOL[0] + 1}.0.0" in err
    assert "run the same llama-cpp-python version on both sides" in err


@needs_rpc
@pytest.mark.slow
def test_host_killed_in_the_middle_of_a_run(tmp_path):
    """The rpc-server dies between two passes: ggml would abort(); dlm says which host, exits 1."""
    from tools.ggufgen import write_random_gguf

    model = write_random_gguf(tmp_path / "m.gguf", "llada", seed=3, n_layer=4, std=0.5, context_length=256)
    server = Server()
    trace = tmp_path / "t.jsonl"
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dlmcli", "generate", "-m", model, "--rpc", server.endpoint, "--raw",
             "-n", "64", "-s", "64", "--no-early-stop", "--no-visual", "--delay", "0.05", "--trace", trace, "hi"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
        deadline = time.monotonic() + 60
        while not (trace.exists() and trace.read_text().count("\n") >= 3):  # header + a couple of steps
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.02)
        server.proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
    finally:
        server.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1 and out == b"", err
    text = err.decode()
    assert text.count("\n") == 1 and "Traceback" not in text, text
    assert text == (f"Error: rpc host {server.endpoint} went away in the middle of the run (the rpc-server "
                    f"stopped, crashed or lost the network); restart it and run again\n")


# --- bad input, no host contacted ----------------------------------------------------------------------

@pytest.mark.parametrize("value,why", [
    ("127.0.0.1:0", "the port must be a number from 1 to 65535"),
    ("127.0.0.1:http", "the port must be a number from 1 to 65535"),
    ("[::1]:50052", "IPv6 is not supported"),
    ("a:1,a:1", "names a:1 twice"),
    (",", "--rpc is empty"),
])
def test_bad_rpc_values(value, why):
    with pytest.raises(UsageError, match=why.replace("[", r"\[")):
        rpc.parse_endpoints(value)


def test_endpoint_port_defaults_to_50052():
    assert rpc.parse_endpoints("a, b:7") == [rpc.Endpoint("a", 50052), rpc.Endpoint("b", 7)]


@pytest.mark.parametrize("kw,msg", [
    (dict(split_mode="diagonal"), "use none, layer or row"),
    (dict(tensor_split="1,x"), "expected proportions"),
    (dict(tensor_split="0,0"), "not all zero"),
    (dict(tensor_split=[1.0, float("nan")]), "non-negative"),
    (dict(main_gpu=-1), "0 or more"),
])
def test_bad_split_options(kw, msg):
    from dlmcli.runtime.llama import Devices

    with pytest.raises(UsageError, match=msg):
        Devices(**kw).check()


def test_bad_device_options_exit_2_before_anything_loads():
    r = run_dlm("generate", "-m", "no-such-model", "--split-mode", "diagonal", "--rpc", "127.0.0.1:1", "hi")
    assert r.returncode == 2 and r.stderr == b"Error: --split-mode 'diagonal': use none, layer or row\n", r.stderr


def test_rpc_without_rpc_compiled_in_says_how_to_reinstall(monkeypatch):
    """On a build without -DGGML_RPC=on (this machine has it, so the probe of support is replaced)."""
    monkeypatch.setattr(rpc, "supported", lambda: False)
    with pytest.raises(rpc.RpcError, match='CMAKE_ARGS="-DGGML_RPC=on" pip install --force-reinstall'):
        rpc.add_servers([rpc.Endpoint("127.0.0.1", 1)])


def test_abort_messages_name_the_host():
    msg = rpc.abort_message("ggml-rpc.cpp:549: RPC handshake failed for 10.0.0.2:50052",
                            ["RPC server version mismatch: 8.0.0\n"])
    assert msg.startswith("rpc host 10.0.0.2:50052: RPC server version mismatch: 8.0.0;")
    assert rpc.abort_message("x.cpp:1: Failed to connect to h:1\n", []) == "rpc host h:1: Failed to connect to h:1"


# --- the server command ---------------------------------------------------------------------------------

@needs_rpc
@pytest.mark.slow
def test_rpc_server_port_in_use():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        r = run_dlm("rpc-server", "--port", busy.getsockname()[1], timeout=60)
    err = _one_error_line(r)
    assert "cannot listen on 127.0.0.1:" in err and "pick another --port" in err


@needs_rpc
@pytest.mark.slow
def test_rpc_server_beyond_loopback_warns_and_stops_on_sigterm():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dlmcli", "rpc-server", "--host", "0.0.0.0", "--port", str(port)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=_env())
    try:
        first = proc.stderr.readline().decode()
        assert first.startswith("Warning: the RPC protocol has no authentication"), first
        assert f"on 0.0.0.0:{port}" in proc.stderr.readline().decode()
        deadline = time.monotonic() + 60
        while True:  # it serves (llama.cpp binds a moment after the line above)
            try:
                rpc.probe(rpc.Endpoint("127.0.0.1", port), timeout=5)
                break
            except rpc.RpcError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 143
        assert proc.stderr.read() == b"Terminated.\n"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


@pytest.mark.slow
def test_rpc_server_unknown_device_and_bad_host():
    if not HAVE_RPC:
        pytest.skip("llama-cpp-python built without -DGGML_RPC=on")
    r = run_dlm("rpc-server", "--port", free_port(), "--device", "NOPE0")
    assert r.returncode == 2 and b"--device NOPE0: no such device here (available: CPU" in r.stderr, r.stderr
    r = run_dlm("rpc-server", "--host", "localhost")
    assert r.returncode == 2 and b"give an IPv4 address" in r.stderr, r.stderr


@needs_rpc
@pytest.mark.slow
def test_two_models_in_one_process_share_a_host(servers):
    """A host already serving this process is not checked again (it serves one client at a time), and a
    later load without rpc stays local: the API's view, in a process of its own."""
    code = (
        "import dlmcli, sys\n"
        f"a = dlmcli.load('tiny-llada', rpc='{servers[0].endpoint}')\n"
        f"b = dlmcli.load('tiny-dream', rpc=['{servers[0].endpoint}'])\n"
        "c = dlmcli.load('tiny-llada')\n"
        "print(a.generate('reverse hello').text, b.generate('add 12 30').text, c.generate('reverse hello').text)\n"
        "print(a.placement.lines()[0]); print(c.placement.lines()[0])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, env=_env(), timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    lines = r.stdout.decode().splitlines()
    assert lines[0] == "olleh 42 olleh"
    assert lines[1] == f"layers 0-5: RPC0 ({servers[0].endpoint})" and lines[2].startswith("layers 0-5: CPU")


@needs_rpc
@pytest.mark.slow
@pytest.mark.parametrize("cache", ["off", "prefix"])
def test_ctrl_c_ends_a_pass_stuck_on_a_frozen_host(tmp_path, cache):
    """A host that keeps its connection but stops answering (here SIGSTOP): llama.cpp waits forever and
    never calls back into Python; Ctrl-C or SIGTERM still ends dlm, with its usual line and status.
    With the prefix cache the pass runs on the KV-cache context, whose logits read waits the same way."""
    from tools.ggufgen import write_random_gguf

    model = write_random_gguf(tmp_path / "m.gguf", "llada", seed=3, n_layer=2, std=0.5, context_length=256)
    server = Server()
    trace = tmp_path / "t.jsonl"
    proc = None
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dlmcli", "generate", "-m", model, "--rpc", server.endpoint, "--raw",
             "-n", "64", "-s", "64", "--no-early-stop", "--no-visual", "--delay", "0.05", "--trace", trace,
             "--cache", cache, "hi"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(),
            preexec_fn=sigint_default_handled)
        deadline = time.monotonic() + 60
        while not (trace.exists() and trace.read_text().count("\n") >= 3):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.02)
        server.proc.send_signal(signal.SIGSTOP)
        size = -1
        while size != trace.stat().st_size:  # the run is now waiting on the frozen host
            size = trace.stat().st_size
            time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        server.proc.send_signal(signal.SIGKILL)
        server.stop()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (proc.returncode, out, err) == (130, b"", b"Interrupted.\n")


@needs_rpc
@pytest.mark.slow
def test_serve_over_two_hosts(servers):
    """dlm serve takes --rpc too: two models over the same two hosts, answered through the openai client."""
    pytest.importorskip("openai")
    from .test_serve import Server as HttpServer

    both = f"{servers[0].endpoint},{servers[1].endpoint}"
    http = HttpServer("-m", "tiny-llada", "-m", "tiny-dream", "--rpc", both)
    try:
        c = http.client()
        for model, prompt, answer in (("tiny-llada", "reverse hello", "olleh"), ("tiny-dream", "add 12 30", "42")):
            r = c.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}], temperature=0)
            assert r.choices[0].message.content == answer
    finally:
        assert http.stop() == 0, http.stderr()
