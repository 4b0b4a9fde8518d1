"""llama.cpp's RPC backend: remote hosts' devices for a model's layers, and the server side.

Everything goes through ggml's backend registry (``ggml_backend_reg_by_name("RPC")`` and its proc
addresses) in the libraries llama-cpp-python ships, so client and server always come from the same
llama.cpp. ggml-rpc answers a failed connect, handshake, send or receive with ``abort()``; dlm checks
each host itself first (connect and handshake, with a timeout) and, for what can only fail later (a
host dying mid-run), turns ggml's abort into one ``Error:`` line naming the host and exit status 1.
"""

from __future__ import annotations

import ctypes
import os
import re
import socket
import struct
import threading
from dataclasses import dataclass

from . import native
from .native import lib
from ..errors import DlmError, UsageError

DEFAULT_PORT = 50052
CONNECT_TIMEOUT = 5.0  # seconds for the pre-flight connect and handshake of each host
REINSTALL = ('CMAKE_ARGS="-DGGML_RPC=on" pip install --force-reinstall --no-cache-dir --no-deps '
             'llama-cpp-python  (add your GPU flag, e.g. -DGGML_CUDA=on, to CMAKE_ARGS)')

# The HELLO exchange of ggml-rpc (ggml/src/ggml-rpc/ggml-rpc.cpp): command 14, an 8-byte size, 24
# bytes of transport capabilities; the answer is an 8-byte size and major, minor, patch, pad, caps.
_CMD_HELLO = 14
_CAPS = 24
_HELLO_RSP = 4 + _CAPS
# The protocol of the llama.cpp inside llama-cpp-python 0.3.36 (ggml-rpc.h); tests/test_rpc.py checks it
# against a real 'dlm rpc-server'. With another llama-cpp-python the pre-flight leaves the version
# verdict to ggml's own handshake.
PROTOCOL = (7, 0, 0)
PROTOCOL_CHECKED_ON = "0.3.36"

_DEV_CPU, _DEV_GPU, _DEV_IGPU = 0, 1, 2


class RpcError(DlmError):
    """An RPC host cannot be used (down, refused, not an RPC server, another protocol version)."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_endpoints(text: str | None) -> list[Endpoint]:
    """``HOST:PORT[,HOST:PORT...]`` (the port defaults to 50052) -> endpoints, in order, no duplicates."""
    out: list[Endpoint] = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, port_s = item.rpartition(":")
        if not sep:
            host, port_s = item, str(DEFAULT_PORT)
        if not host or not re.fullmatch(r"[A-Za-z0-9.\-_]+", host):
            raise UsageError(f"--rpc {item!r}: expected HOST:PORT (an IPv4 address or a host name, e.g. "
                             f"192.168.1.10:{DEFAULT_PORT}); IPv6 is not supported by llama.cpp's RPC")
        if not port_s.isdigit() or not 1 <= int(port_s) <= 65535:
            raise UsageError(f"--rpc {item!r}: the port must be a number from 1 to 65535")
        ep = Endpoint(host, int(port_s))
        if ep in out:
            raise UsageError(f"--rpc names {ep} twice; each rpc-server may be listed once")
        out.append(ep)
    if text is not None and text.strip() and not out:
        raise UsageError("--rpc is empty; give HOST:PORT[,HOST:PORT...]")
    return out


def _ipv4(ep: Endpoint) -> str:
    # ggml-rpc connects over IPv4 only (gethostbyname): resolve the same way, so the check is honest.
    try:
        return socket.gethostbyname(ep.host)
    except (socket.gaierror, UnicodeError):
        raise RpcError(f"rpc host {ep}: cannot resolve '{ep.host}' to an IPv4 address; check the name") from None


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def probe(ep: Endpoint, timeout: float = CONNECT_TIMEOUT) -> tuple[int, int, int]:
    """Connect to an rpc-server and do ggml-rpc's handshake; return its protocol version.

    Raises RpcError, naming the host, for every way this can fail, within about ``timeout`` seconds.
    """
    addr = _ipv4(ep)
    try:
        sock = socket.create_connection((addr, ep.port), timeout=timeout)
    except ConnectionRefusedError:
        raise RpcError(f"rpc host {ep} refused the connection: nothing listens on port {ep.port} there; "
                       f"start 'dlm rpc-server --host ADDRESS --port {ep.port}' on it") from None
    except socket.timeout:
        raise RpcError(f"rpc host {ep} did not accept a connection within {timeout:g} s "
                       f"(host down, or a firewall drops the port)") from None
    except OSError as e:
        raise RpcError(f"rpc host {ep}: cannot connect ({e.strerror or e})") from None
    with sock:
        try:
            sock.sendall(bytes([_CMD_HELLO]) + struct.pack("<Q", _CAPS) + bytes(_CAPS))
            size = _recv_exact(sock, 8)
            body = _recv_exact(sock, _HELLO_RSP) if len(size) == 8 else b""
        except socket.timeout:
            raise RpcError(f"rpc host {ep} accepted the connection but did not answer the handshake within "
                           f"{timeout:g} s; an rpc-server serves one client at a time: is another one using "
                           f"it?") from None
        except OSError as e:
            raise RpcError(f"rpc host {ep} dropped the connection during the handshake ({e.strerror or e}); "
                           f"is it an rpc-server of the same llama.cpp version?") from None
    if len(size) < 8 or struct.unpack("<Q", size)[0] != _HELLO_RSP or len(body) < _HELLO_RSP:
        raise RpcError(f"rpc host {ep} closed the connection or answered something else at the handshake: "
                       f"it is not an rpc-server speaking this llama.cpp's protocol (a different version?); "
                       f"install the same llama-cpp-python on both sides")
    return body[0], body[1], body[2]


def _check_version(ep: Endpoint, version: tuple[int, int, int]) -> None:
    import llama_cpp

    if getattr(llama_cpp, "__version__", None) != PROTOCOL_CHECKED_ON:
        return  # ggml's handshake decides (and the abort handler reports it)
    major, minor, _patch = version
    if major != PROTOCOL[0] or minor > PROTOCOL[1]:
        raise RpcError(f"rpc host {ep} speaks RPC protocol {'.'.join(map(str, version))} but this dlm's "
                       f"llama.cpp speaks {'.'.join(map(str, PROTOCOL))}; run the same llama-cpp-python "
                       f"version on both sides")


# --- the ggml libraries -----------------------------------------------------------------------

class _Ggml:
    """ctypes functions of the ggml libraries already loaded by llama-cpp-python."""

    def __init__(self) -> None:
        # dlsym on libllama's own handle searches it and the libraries it was linked with: the very
        # copies of libggml and libggml-base llama.cpp uses. (A wheel holds real copies, not links,
        # of libggml-base.so and libggml-base.so.0: opening one by path would load a second ggml
        # with its own registry and its own abort hook.)
        self.libs = [lib._lib]
        vp, cp = ctypes.c_void_p, ctypes.c_char_p
        self.reg_by_name = self._fn("ggml_backend_reg_by_name", vp, [cp])
        self.reg_get_proc_address = self._fn("ggml_backend_reg_get_proc_address", vp, [vp, cp])
        self.reg_name = self._fn("ggml_backend_reg_name", cp, [vp])
        self.register = self._fn("ggml_backend_register", None, [vp])
        self.dev_count = self._fn("ggml_backend_dev_count", ctypes.c_size_t, [])
        self.dev_get = self._fn("ggml_backend_dev_get", vp, [ctypes.c_size_t])
        self.dev_by_name = self._fn("ggml_backend_dev_by_name", vp, [cp])
        self.dev_name = self._fn("ggml_backend_dev_name", cp, [vp])
        self.dev_description = self._fn("ggml_backend_dev_description", cp, [vp])
        self.dev_type = self._fn("ggml_backend_dev_type", ctypes.c_int, [vp])
        self.dev_backend_reg = self._fn("ggml_backend_dev_backend_reg", vp, [vp])
        self.dev_memory = self._fn("ggml_backend_dev_memory", None, [vp, ctypes.POINTER(ctypes.c_size_t),
                                                                     ctypes.POINTER(ctypes.c_size_t)])
        self.set_abort_callback = self._fn("ggml_set_abort_callback", vp, [ABORT_CALLBACK])

    def _fn(self, name, restype, argtypes):
        for so in self.libs:
            f = getattr(so, name, None)
            if f is not None:
                f.restype, f.argtypes = restype, argtypes
                return f
        raise DlmError(f"llama.cpp's libraries lack {name}; dlm needs llama-cpp-python 0.3.36 or later")


    def devices(self) -> list["Device"]:
        out = []
        for i in range(self.dev_count()):
            d = self.dev_get(i)
            reg = self.dev_backend_reg(d)
            out.append(Device(d, (self.dev_name(d) or b"").decode(), (self.dev_description(d) or b"").decode(),
                              self.dev_type(d), (self.reg_name(reg) or b"").decode() if reg else ""))
        return out


ABORT_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_char_p)


@dataclass(frozen=True)
class Device:
    ptr: int
    name: str
    description: str
    type: int
    backend: str

    @property
    def is_rpc(self) -> bool:
        return self.backend.startswith("RPC")

    def label(self) -> str:
        return f"{self.name} ({self.description})" if self.description and self.description != self.name \
            else self.name


_state: dict = {"ggml": None, "registered": {}, "abort_cb": None, "endpoints": []}
_lock = threading.Lock()


def ggml() -> _Ggml:
    if _state["ggml"] is None:
        native.init(native.is_verbose())
        _state["ggml"] = _Ggml()
    return _state["ggml"]


def supported() -> bool:
    """Whether this llama.cpp was built with the RPC backend (-DGGML_RPC=on)."""
    native.init(native.is_verbose())
    return bool(lib.llama_supports_rpc())


def require() -> _Ggml:
    if not supported():
        raise RpcError(f"this llama-cpp-python was built without RPC; reinstall it with: {REINSTALL}")
    return ggml()


def _proc(g: _Ggml, name: str, proto):
    reg = g.reg_by_name(b"RPC")
    addr = g.reg_get_proc_address(reg, name.encode()) if reg else None
    if not addr:
        raise RpcError(f"this llama.cpp's RPC backend has no {name}; reinstall llama-cpp-python: {REINSTALL}")
    return proto(addr)


_ADD_SERVER = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)
_START_SERVER = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t,
                                 ctypes.POINTER(ctypes.c_void_p))


def connect_timeout() -> float:
    """Seconds each host gets to accept and answer the handshake: DLM_RPC_TIMEOUT, else 5."""
    raw = os.environ.get("DLM_RPC_TIMEOUT")
    if not raw:
        return CONNECT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < 3600:
        raise UsageError(f"DLM_RPC_TIMEOUT={raw!r}: give seconds, more than 0 (default {CONNECT_TIMEOUT:g})")
    return value


def add_servers(endpoints: list[Endpoint], timeout: float | None = None) -> list[Device]:
    """Check every host, then register its devices with ggml (once per process); returns them in order."""
    if not endpoints:
        return []
    g = require()
    timeout = connect_timeout() if timeout is None else timeout
    for ep in endpoints:  # every host is checked before ggml (which aborts on failure) touches any
        if str(ep) not in _state["registered"]:  # a registered one is busy serving this very process
            _check_version(ep, probe(ep, timeout))
    install_abort_handler()
    native.escape_stuck_calls()  # Ctrl-C still ends a pass that waits on a host that froze
    add = _proc(g, "ggml_backend_rpc_add_server", _ADD_SERVER)
    out: list[Device] = []
    with _lock:
        for ep in endpoints:
            key = str(ep)
            if key not in _state["registered"]:
                _state["endpoints"].append(ep)
                before = {d.ptr for d in g.devices()}
                reg = add(key.encode())
                if not reg:
                    raise RpcError(f"rpc host {ep} reports no devices; start its rpc-server with a --device")
                g.register(reg)
                _state["registered"][key] = [d for d in g.devices() if d.ptr not in before]
            out += _state["registered"][key]
    return out


def model_devices(rpc: list[Device]) -> list[Device] | None:
    """The devices a model should use, for ``llama_model_params.devices``; None: llama.cpp's default.

    Once RPC devices are registered, llama.cpp's default would use all of them for every later model
    in the process; so the list is then explicit: the hosts asked for (first, as llama.cpp orders
    them), then the local GPUs.
    """
    if not _state["registered"]:
        return None
    local = [d for d in ggml().devices() if not d.is_rpc and d.type == _DEV_GPU]
    if not local:
        local = [d for d in ggml().devices() if not d.is_rpc and d.type == _DEV_IGPU][:1]
    return list(rpc) + local


# --- ggml's abort -> one line -------------------------------------------------------------------

def install_abort_handler() -> None:
    """From now on a ggml abort (a lost RPC host) prints one Error line and exits 1, not a core dump."""
    with _lock:
        if _state["abort_cb"] is None:
            _state["abort_cb"] = ABORT_CALLBACK(_on_abort)  # kept: a collected callback would crash
            ggml().set_abort_callback(_state["abort_cb"])


def _on_abort(message: bytes) -> None:
    # ggml calls abort() right after this returns and nothing can unwind through its C++ frames, so
    # the process ends here: one line, then _exit (no Python cleanup can run from this thread).
    try:
        text = (message or b"").decode("utf-8", "replace")
        line = abort_message(text, native.recent_errors())
    except BaseException:  # noqa: BLE001 (never raise into C)
        line = "llama.cpp aborted"
    try:
        prefix = "\n\x1b[?25h" if os.isatty(2) else ""  # leave a live view's last frame, show the cursor
        os.write(2, f"{prefix}Error: {line}\n".encode("utf-8", "replace"))
    finally:
        os._exit(1)


def abort_message(text: str, recent: list[str]) -> str:
    """What to tell the user about a ggml abort (TEXT: ggml's message; RECENT: its last error logs)."""
    detail = re.sub(r"^\S+:\d+: ", "", text.strip())  # drop "file.cpp:123: "
    m = re.search(r"(?:Failed to connect to|RPC handshake failed for|Failed to parse endpoint:?) *(\S+)", detail)
    if m:
        ep = m.group(1)
        version = next((r for r in reversed(recent) if "version mismatch" in r), None)
        if version:
            return (f"rpc host {ep}: {version.strip()}; run the same llama-cpp-python version on both sides")
        return f"rpc host {ep}: {detail}"
    if "RPC server" in detail or "Remote RPC" in detail:
        eps = [str(e) for e in _state["endpoints"]]
        dead = [e for e in _state["endpoints"] if not _reachable(e)]
        named = ", ".join(str(e) for e in dead) if dead else ", ".join(eps) or "an rpc host"
        what = "went away" if dead else "failed or sent a malformed answer"
        return (f"rpc host {named} {what} in the middle of the run (the rpc-server stopped, crashed or lost "
                f"the network); restart it and run again")
    return f"llama.cpp aborted: {detail}"


def _reachable(ep: Endpoint, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((socket.gethostbyname(ep.host), ep.port), timeout=timeout):
            return True
    except OSError:
        return False


# --- where the layers went -----------------------------------------------------------------------

@dataclass(frozen=True)
class Placement:
    """llama.cpp's own account of a model load: which device holds each layer, and buffer sizes."""

    layers: tuple[tuple[int, int, str], ...]  # (first, last, device label) for the repeating layers
    output: str | None  # the device of the output layer
    buffers: tuple[tuple[str, float], ...]  # (buffer name, MiB)

    def lines(self) -> list[str]:
        out = []
        for first, last, dev in self.layers:
            span = f"layer {first}" if first == last else f"layers {first}-{last}"
            out.append(f"{span}: {dev}")
        if self.output:
            out.append(f"output layer: {self.output}")
        if self.buffers:
            out.append("weights: " + ", ".join(f"{name} {mib:.1f} MiB" for name, mib in self.buffers))
        return out


_ASSIGN = re.compile(r"layer\s+(\d+) assigned to device ([^,\s]+)")
_BUFFER = re.compile(r"load_tensors:\s+(\S+) model buffer size =\s+([\d.]+) MiB")


def parse_placement(log: str) -> Placement | None:
    """Read llama.cpp's load log (debug level included) into a Placement."""
    assigned: dict[int, str] = {}
    for m in _ASSIGN.finditer(log):
        assigned[int(m.group(1))] = m.group(2)
    if not assigned:
        return None
    labels = {}
    try:
        labels = {d.name: d.label() for d in ggml().devices()}
    except DlmError:
        pass
    n = max(assigned)  # the last index is the output layer (llama.cpp assigns n_layer + 1 of them)
    spans: list[list] = []
    for il in range(n):
        dev = labels.get(assigned.get(il, "?"), assigned.get(il, "?"))
        if spans and spans[-1][2] == dev and spans[-1][1] == il - 1:
            spans[-1][1] = il
        else:
            spans.append([il, il, dev])
    output = labels.get(assigned[n], assigned[n])
    buffers = tuple((m.group(1), float(m.group(2))) for m in _BUFFER.finditer(log))
    return Placement(tuple(tuple(s) for s in spans), output, buffers)


# --- the server side -------------------------------------------------------------------------------

def server_devices(names: list[str] | None) -> list[Device]:
    """The devices an rpc-server offers: those named, else the accelerators, else the CPU (as llama.cpp's
    rpc-server picks them)."""
    g = require()
    all_devs = [d for d in g.devices() if not d.is_rpc]
    if names:
        out = []
        for name in names:
            hit = [d for d in all_devs if d.name.lower() == name.lower()]
            if not hit:
                have = ", ".join(d.name for d in all_devs) or "none"
                raise UsageError(f"--device {name}: no such device here (available: {have})")
            out.append(hit[0])
        return out
    accel = [d for d in all_devs if d.type in (_DEV_GPU, _DEV_IGPU)]
    return accel or [d for d in all_devs if d.type == _DEV_CPU][:1]


def check_listen(host: str, port: int) -> None:
    """Fail with a clear line where llama.cpp would only print "Failed to create server socket"."""
    try:
        socket.inet_aton(host)  # llama.cpp binds with inet_addr: an IPv4 address only
        if host.count(".") != 3:
            raise OSError
    except OSError:
        raise UsageError(f"--host {host!r}: give an IPv4 address to listen on (127.0.0.1, 0.0.0.0 or one "
                         f"of this machine's addresses)") from None
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as llama.cpp does
        try:
            s.bind((host, port))
        except OSError as e:
            raise RpcError(f"cannot listen on {host}:{port}: {e.strerror}; pick another --port or --host") \
                from None


def start_server(host: str, port: int, devices: list[Device], cache_dir: str | None, n_threads: int) -> None:
    """Serve DEVICES on HOST:PORT until the process ends (llama.cpp's ggml_backend_rpc_start_server).

    Returns only if llama.cpp could not start or its accept loop failed (it prints why).
    """
    g = require()
    fn = _proc(g, "ggml_backend_rpc_start_server", _START_SERVER)
    arr = (ctypes.c_void_p * len(devices))(*[d.ptr for d in devices])
    install_abort_handler()
    fn(f"{host}:{port}".encode(), os.fsencode(cache_dir) if cache_dir else None, n_threads, len(devices), arr)


def serve_forever(host: str, port: int, devices: list[Device], cache_dir: str | None, n_threads: int) -> None:
    """Run the server in a thread and wait; returns only by an exception (KeyboardInterrupt or
    Terminated from a signal, RpcError when llama.cpp's server stopped by itself)."""
    import signal

    def serve():
        # Signals go to the main thread, which waits in Python: an interrupted accept() or recv()
        # in here would drop a client or end the server loop.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        start_server(host, port, devices, cache_dir, n_threads)

    failure: list[BaseException] = []

    def guarded():
        try:
            serve()
        except BaseException as e:  # noqa: BLE001 (handed to the main thread)
            failure.append(e)

    t = threading.Thread(target=guarded, name="rpc-server", daemon=True)
    t.start()
    while t.is_alive():
        t.join(0.25)
    if failure:
        raise failure[0]
    raise RpcError(f"llama.cpp's RPC server on {host}:{port} stopped (its message is above; -v shows its log)")


def device_memory(d: Device) -> tuple[int, int]:
    free, total = ctypes.c_size_t(), ctypes.c_size_t()
    ggml().dev_memory(d.ptr, ctypes.byref(free), ctypes.byref(total))
    return free.value, total.value


def is_loopback(host: str) -> bool:
    try:
        return socket.inet_aton(host)[0] == 127
    except OSError:
        return False


__all__ = ["Endpoint", "RpcError", "Placement", "parse_endpoints", "probe", "add_servers", "model_devices",
           "supported", "start_server", "server_devices", "parse_placement", "is_loopback",
           "serve_forever"]
