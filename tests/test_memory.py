"""The memory check before a load (issue 15): the estimator against real GGUF files, the free-memory
readers, and the refusal and its override end to end through the CLI (DLM_MEMORY_LIMIT lowers what
the check takes as free, as a cgroup limit would)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dlmcli import memory
from dlmcli.memory import Budget, Free, MemoryCheckError, estimate, read_shape

from .conftest import ROOT, run_dlm

TINY = ROOT / "dlmcli" / "models" / "tiny-llada.gguf"


def _tensor_bytes_by_gguf(path: Path) -> dict[str, int]:
    """Every tensor's data size as the gguf package (llama.cpp's own Python reader) reports it."""
    from gguf import GGUFReader

    return {t.name: int(t.n_bytes) for t in GGUFReader(str(path)).tensors}


@pytest.mark.parametrize("name", ["llada.gguf", "dream.gguf"])
def test_weights_are_the_files_tensor_bytes(gguf_dir, name):
    path = gguf_dir / name
    sizes = _tensor_bytes_by_gguf(path)
    shape = read_shape(path)
    assert shape.weights == sum(sizes.values())
    # and the file is those bytes plus a header (and alignment padding) smaller than them
    assert 0 < path.stat().st_size - shape.weights < 64 * 1024
    for i, layer in enumerate(shape.layer_bytes):
        assert layer == sum(v for k, v in sizes.items() if k.startswith(f"blk.{i}."))
    assert shape.input_bytes == sizes["token_embd.weight"]


def test_the_bundled_models_shape():
    sizes = _tensor_bytes_by_gguf(TINY)
    shape = read_shape(TINY)
    assert shape.weights == sum(sizes.values()) and shape.n_layer == 6
    assert (shape.n_vocab, shape.n_embd, shape.n_ff, shape.n_ctx) == (360, 192, 512, 96)


def test_the_estimate_grows_with_the_canvas_and_adds_up():
    shape = read_shape(TINY)
    small, large = estimate(shape, 32), estimate(shape, 96)
    assert small.host < large.host and small.device == large.device == 0
    out, compute = memory.context_bytes(shape, 96)
    assert out == 96 * 360 * 4  # a logit row per canvas position, float32
    assert large.host == shape.weights + out + compute + memory.PROCESS_OVERHEAD
    # two sequences of 48 need the buffers of one pass over 96 positions
    assert estimate(shape, 96, n_seq=2).context == large.context


def test_gpu_offload_moves_the_output_head_first_then_layers_from_the_end():
    shape = read_shape(TINY)
    total = shape.weights
    none = estimate(shape, 64, n_gpu_layers=3, have_gpu=False)
    assert none.device == 0 and none.weights_host == total  # no GPU: -ngl changes nothing
    one = estimate(shape, 64, n_gpu_layers=1, have_gpu=True)
    assert one.gpu_layers == 1 and one.weights_device == shape.output_bytes
    three = estimate(shape, 64, n_gpu_layers=3, have_gpu=True)
    assert three.weights_device == shape.output_bytes + shape.layer_bytes[-1] + shape.layer_bytes[-2]
    every = estimate(shape, 64, n_gpu_layers=-1, have_gpu=True)
    assert every.gpu_layers == shape.n_layer + 1
    assert every.weights_host == shape.input_bytes + shape.other_bytes  # the token embedding stays on the host
    assert every.weights_host + every.weights_device == total + (shape.output_bytes - shape.head_bytes)


def test_a_gpu_too_small_is_refused_with_a_layer_count_that_fits():
    shape = read_shape(TINY)
    want = estimate(shape, 64, n_gpu_layers=-1, have_gpu=True)
    free = Free(host=1 << 40, source="MemAvailable", gpus=(("CUDA0", want.device - 1, 1 << 34),))
    budget = Budget("tiny", shape, free, n_gpu_layers=-1)
    with pytest.raises(MemoryCheckError) as e:
        budget.check(64)
    message = str(e.value)
    assert "of GPU memory" in message and "on CUDA0" in message and "--no-memory-check" in message
    assert "(1 byte short)" in message
    assert not budget.fits(budget.estimate(64))
    fit = int(message.split("--ngl ")[1].split()[0])
    assert 0 < fit < shape.n_layer + 1
    Budget("tiny", shape, free, n_gpu_layers=fit).check(64)  # the advice holds
    assert Budget("tiny", shape, free, n_gpu_layers=0).check(64).device == 0


@pytest.mark.parametrize("gpus", [(("HTP0", 0, 0),), (("CUDA0", 1 << 34, 1 << 34), ("CUDA1", 0, 0))])
def test_a_gpu_that_reports_no_total_is_not_checked(gpus):
    # Hexagon's HTP (and CUDA when cudaMemGetInfo fails) report free = total = 0: free unknown, not none.
    shape = read_shape(TINY)
    free = Free(host=1 << 40, source="MemAvailable", gpus=gpus)
    assert not free.gpu_known
    budget = Budget("tiny", shape, free, n_gpu_layers=-1)
    est = budget.check(64)
    assert est.device > 0 and est.gpu_layers == shape.n_layer + 1 and budget.fits(est)
    with pytest.raises(MemoryCheckError):  # the host is still checked
        Budget("tiny", shape, Free(host=1 << 20, source="MemAvailable", gpus=gpus), n_gpu_layers=-1).check(64)


def test_rpc_hosts_memory_is_not_checked_here():
    shape = read_shape(TINY)
    free = Free(host=1 << 40, source="MemAvailable", gpus=())
    est = Budget("tiny", shape, free, n_gpu_layers=-1, remote=True).check(64)
    assert est.device > 0  # counted as elsewhere, not refused


@pytest.mark.parametrize("text, value", [("8G", 8 << 30), ("512M", 512 << 20), ("1.5GiB", 3 << 29),
                                         ("2000", 2000), ("64kb", 64 << 10)])
def test_sizes(text, value):
    assert memory.parse_size(text) == value


def test_a_bad_size_is_a_usage_error():
    from dlmcli.errors import UsageError

    with pytest.raises(UsageError, match="DLM_MEMORY_LIMIT"):
        memory.parse_size("lots")


def test_cgroup_v2_limit(tmp_path):
    (tmp_path / "proc").write_text("0::/user.slice/app\n")
    d = tmp_path / "cg" / "user.slice" / "app"
    d.mkdir(parents=True)
    (d / "memory.max").write_text("1073741824\n")
    (d / "memory.current").write_text("536870912\n")
    (d / "memory.stat").write_text("anon 1\ninactive_file 1048576\n")
    assert memory.cgroup_free(tmp_path / "cg", tmp_path / "proc") == (512 << 20) + (1 << 20)
    # the active page cache (a model file read before, by this run's own mmap too) counts as free as well
    (d / "memory.stat").write_text("anon 1\nactive_file 4194304\ninactive_file 1048576\nactive_anon 9\n")
    assert memory.cgroup_free(tmp_path / "cg", tmp_path / "proc") == (512 << 20) + (5 << 20)
    (d / "memory.max").write_text("max\n")
    assert memory.cgroup_free(tmp_path / "cg", tmp_path / "proc") is None


def test_cgroup_v1_limit_and_no_limit(tmp_path):
    (tmp_path / "proc").write_text("4:memory:/job\n0::/\n")
    d = tmp_path / "cg" / "memory" / "job"
    d.mkdir(parents=True)
    (d / "memory.limit_in_bytes").write_text(str(2 << 30))
    (d / "memory.usage_in_bytes").write_text(str(1 << 30))
    assert memory.cgroup_free(tmp_path / "cg", tmp_path / "proc") == 1 << 30
    (d / "memory.stat").write_text("active_file 7\ntotal_active_file 2048\ntotal_inactive_file 1024\n")
    assert memory.cgroup_free(tmp_path / "cg", tmp_path / "proc") == (1 << 30) + 3072  # v1: the total_ rows
    (d / "memory.limit_in_bytes").write_text("9223372036854771712")  # v1's "no limit"
    assert memory.cgroup_free(tmp_path / "cg", tmp_path / "proc") is None


def test_the_smallest_free_figure_wins(monkeypatch):
    monkeypatch.setenv(memory.LIMIT_ENV, "1M")
    assert memory.free_host() == (1 << 20, memory.LIMIT_ENV)
    monkeypatch.delenv(memory.LIMIT_ENV)
    free, source = memory.free_host()
    assert free is not None and free > 1 << 20 and source != memory.LIMIT_ENV


# --- end to end through the CLI --------------------------------------------------------------
def test_a_load_that_does_not_fit_is_refused_in_one_line_and_the_flag_overrides_it():
    r = run_dlm("generate", "-m", "tiny-llada", "reverse hello", env={"DLM_MEMORY_LIMIT": "50M"})
    lines = r.stderr.decode().splitlines()
    assert r.returncode == 1 and r.stdout == b"" and len(lines) == 1, r.stderr
    line = lines[0]
    assert line.startswith("Error: tiny-llada needs about ") and "but 50 MiB is free (DLM_MEMORY_LIMIT)" in line
    assert "--no-memory-check" in line and "smaller quantization" in line
    ok = run_dlm("generate", "-m", "tiny-llada", "reverse hello", "--no-memory-check",
                 env={"DLM_MEMORY_LIMIT": "50M"})
    assert ok.returncode == 0 and ok.stdout == b"olleh\n", ok.stderr


@pytest.mark.slow
def test_the_other_loading_commands_check_too():
    env = {"DLM_MEMORY_LIMIT": "50M"}
    infill = run_dlm("infill", "-m", "tiny-llada", "a[MASK:2]b", env=env)
    chat = run_dlm("chat", "-m", "tiny-llada", input=b"reverse hello\n", env=env)
    for r in (infill, chat):
        assert r.returncode == 1 and b"Error: tiny-llada needs about" in r.stderr, r.stderr
    ok = run_dlm("chat", "-m", "tiny-llada", "--no-memory-check", input=b"reverse hello\n", env=env)
    assert ok.returncode == 0 and ok.stdout == b"olleh\n", ok.stderr


def test_a_longer_answer_is_checked_before_the_load():
    shape = read_shape(TINY)
    default = estimate(shape, 16 + memory.PROMPT_ALLOWANCE).host
    longer = estimate(shape, 96).host  # -n 80 plus the prompt allowance, capped at the context
    limit = (default + longer) // 2
    env = {"DLM_MEMORY_LIMIT": str(limit)}
    assert run_dlm("generate", "-m", "tiny-llada", "reverse hello", env=env).stdout == b"olleh\n"
    r = run_dlm("generate", "-m", "tiny-llada", "-n", "80", "reverse hello", env=env)
    assert r.returncode == 1 and b"a canvas of 96 tokens" in r.stderr, r.stderr


@pytest.mark.parametrize("cache", ["off", "prefix"])
def test_the_exact_canvas_of_a_batch_is_checked_before_its_pass(tmp_path, cache):
    # The load fits; eight prompts sharing one pass need a context eight canvases wide, which does not
    # (with --cache prefix, the KV cache's context too).
    shape = read_shape(TINY)
    kv = cache != "off"
    load = estimate(shape, 16 + memory.PROMPT_ALLOWANCE, kv=kv).host
    batch = estimate(shape, 8 * 25, kv=kv).host  # 8 x (a templated prompt of ~9 tokens + 16)
    assert load < batch
    prompts = tmp_path / "p.txt"
    prompts.write_text("reverse hello\n" * 8)
    r = run_dlm("generate", "-m", "tiny-llada", "--batch", prompts, "--cache", cache,
                env={"DLM_MEMORY_LIMIT": str(load + 4096)})
    assert r.returncode == 1 and b"over 8 sequences" in r.stderr and r.stdout == b"", r.stderr
    assert len(r.stderr.decode().splitlines()) == 1


@pytest.mark.slow
def test_info_and_models_show_the_estimate():
    info = json.loads(run_dlm("info", "tiny-llada", "--json").stdout)
    mem = info["memory"]
    shape = read_shape(TINY)
    assert mem["canvas_tokens"] == 16 + memory.PROMPT_ALLOWANCE
    assert mem["host"] == estimate(shape, mem["canvas_tokens"]).host and mem["fits"] is True
    text = run_dlm("info", "tiny-llada").stdout.decode()
    assert "memory" in text and f"for a canvas of {mem['canvas_tokens']} tokens" in text
    low = run_dlm("info", "tiny-llada", env={"DLM_MEMORY_LIMIT": "50M"}).stdout.decode()
    assert "too much" in low and "--no-memory-check" in low
    models = run_dlm("models").stdout.decode().splitlines()
    assert "MEMORY" in models[0]
    row = next(line for line in models if line.startswith("tiny-llada"))
    assert memory.gib(mem["host"]) in row
    rows = {r["name"]: r for r in json.loads(run_dlm("models", "--json").stdout)}
    assert rows["tiny-llada"]["memory"] == mem["host"] and rows["tiny-llada"]["memory_approx"] is False
    assert rows["llada-8b-instruct"]["memory_approx"] is True


def test_requests_that_fit_alone_but_not_together_wait_instead_of_failing():
    # Two requests of about 57 positions each against room for 85: before, both shared a pass that
    # failed the check, and both got 503; now the second waits for the first and both are answered.
    from concurrent.futures import ThreadPoolExecutor

    from .test_serve import Server

    shape = read_shape(TINY)
    limit = estimate(shape, 85).host + 1
    s = Server("-m", "tiny-llada", "--max-batch", "4", env={"DLM_MEMORY_LIMIT": str(limit)})
    try:
        body = {"model": "tiny-llada", "messages": [{"role": "user", "content": "reverse hello"}], "temperature": 0,
                "max_tokens": 40}
        code, _, data = s.http("POST", "/v1/chat/completions", body)
        assert code == 200, data  # one alone fits
        with ThreadPoolExecutor(3) as ex:
            got = list(ex.map(lambda _: s.http("POST", "/v1/chat/completions", body), range(3)))
        assert [g[0] for g in got] == [200, 200, 200], [g[2][:200] for g in got]
        code, _, data = s.http("POST", "/v1/chat/completions", dict(body, max_tokens=72))
        assert code == 503 and json.loads(data)["error"]["code"] == "out_of_memory", data  # too large alone
    finally:
        assert s.stop() == 0


def test_a_server_pass_that_does_not_fit_is_a_503_and_the_server_keeps_serving():
    from .test_serve import Server

    shape = read_shape(TINY)
    limit = estimate(shape, 16 + memory.PROMPT_ALLOWANCE).host + 1  # the load fits; no pass past 80 positions
    s = Server("-m", "tiny-llada", env={"DLM_MEMORY_LIMIT": str(limit)})
    try:
        body = {"model": "tiny-llada", "messages": [{"role": "user", "content": "reverse hello"}], "temperature": 0}
        code, _, data = s.http("POST", "/v1/chat/completions", dict(body, max_tokens=72))
        err = json.loads(data)["error"]
        assert code == 503 and err["code"] == "out_of_memory", data
        assert "fewer max_tokens" in err["message"] and "--" not in err["message"]
        code, _, data = s.http("POST", "/v1/chat/completions", body)
        assert code == 200 and json.loads(data)["choices"][0]["message"]["content"] == "olleh"
    finally:
        assert s.stop() == 0


# --- malformed headers: no estimate, never a traceback (review of issue 15) ---------------------
def _one_error_or_success(r) -> None:
    err = r.stderr.decode()
    assert "Traceback" not in err, err
    if r.returncode:
        assert r.returncode == 1 and [line for line in err.splitlines() if line.startswith("Error:")] \
            and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("key", ["dlm.gen_length", "llada.feed_forward_length", "llada.embedding_length"])
def test_a_non_finite_key_means_no_estimate_not_a_traceback(tmp_path, key):
    from tools.ggufgen import write_random_gguf

    p = write_random_gguf(tmp_path / "m.gguf", "llada", extra_kv={key: float("inf")})
    info = run_dlm("info", p)
    assert info.returncode == 0 and b"Traceback" not in info.stderr, info.stderr
    _one_error_or_success(run_dlm("generate", "-m", p, "-n", "4", "-s", "2", "--raw", "x"))


def test_non_finite_and_out_of_range_hints_are_ignored():
    from dlmcli.defaults import file_hints

    meta = {"dlm.gen_length": float("inf"), "dlm.steps": float("nan"), "dlm.block_length": 2**40}
    assert file_hints(meta.get, "llada") == {}


def test_a_huge_layer_count_gives_up_the_estimate_quickly(tmp_path):
    import time

    from dlmcli.api import memory_budget
    from tools.ggufgen import CharVocab, random_tensors, write_gguf, write_random_gguf

    p = write_random_gguf(tmp_path / "m.gguf", "llada", extra_kv={"llada.block_count": 4_000_000_000})
    tensors = random_tensors("llada", n_vocab=len(CharVocab()), n_layer=2, n_embd=64, n_head=4, n_ff=128)
    tensors["blk.4000000000.x"] = tensors["blk.0.attn_norm.weight"]
    q = tmp_path / "t.gguf"
    write_gguf(q, arch="llada", tensors=tensors, n_head=4, context_length=256, dtype="f32")
    for path in (p, q):
        start = time.monotonic()
        assert memory_budget(path, "m") is None
        assert time.monotonic() - start < 5
        info = run_dlm("info", path, timeout=30)
        assert info.returncode == 0 and b"Traceback" not in info.stderr, info.stderr
        assert b"canvas of" not in info.stdout  # no memory line: no estimate
    _one_error_or_success(run_dlm("generate", "-m", q, "-n", "4", "-s", "2", "--raw", "x", timeout=30))
    # llama.cpp's loader aborts the process past its 512 layers (a C++ assertion and a backtrace):
    # refused before it, with or without the memory check
    for flags in ((), ("--no-memory-check",)):
        r = run_dlm("generate", "-m", p, "-n", "4", "-s", "2", "--raw", "x", *flags, timeout=30)
        lines = r.stderr.decode().strip().splitlines()
        assert r.returncode == 1 and len(lines) == 1 and "4000000000 layers" in lines[0], r.stderr[-2000:]


def test_a_huge_split_count_gives_up_the_estimate_quickly(tmp_path):
    import time

    from dlmcli.api import memory_budget
    from tools.ggufgen import write_random_gguf

    p = write_random_gguf(tmp_path / "m-00001-of-00002.gguf", "llada", extra_kv={"split.count": 4_000_000_000})
    start = time.monotonic()
    assert memory_budget(p, "m") is None
    assert time.monotonic() - start < 5
    _one_error_or_success(run_dlm("generate", "-m", p, "-n", "4", "-s", "2", "--raw", "x", timeout=30))
    info = run_dlm("info", p, timeout=30)  # it listed 4e9 shard names before answering
    assert info.returncode == 1 and b"split into 4000000000 files" in info.stderr, info.stderr[-2000:]
    assert len(info.stderr.decode().strip().splitlines()) == 1


# --- a model file in RAM (tmpfs, ramfs) -------------------------------------------------------
MOUNTS = """\
/dev/sda1 / ext4 rw,relatime 0 0
tmpfs /dev/shm tmpfs rw,nosuid,nodev 0 0
/dev/sdb1 /dev/shm/disk ext4 rw 0 0
none /mnt/my\\040ram ramfs rw 0 0
tmpfs /srv tmpfs rw 0 0
/dev/sdc1 /srv xfs rw 0 0
"""


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="reads a Linux mount table")
@pytest.mark.parametrize("path, kind", [("/dev/shm/m.gguf", "tmpfs"), ("/dev/shm/disk/m.gguf", "ext4"),
                                        ("/dev/shmx/m.gguf", "ext4"), ("/mnt/my ram/m.gguf", "ramfs"),
                                        ("/srv/m.gguf", "xfs"), ("/home/m.gguf", "ext4")])
def test_the_filesystem_of_a_path_is_its_longest_mount_point(tmp_path, path, kind):
    mounts = tmp_path / "mounts"
    mounts.write_text(MOUNTS)
    assert memory.filesystem_of(path, mounts) == kind  # the last mount on a point wins (/srv)
    assert memory.in_ram(path, mounts) == (kind if kind in ("tmpfs", "ramfs") else None)


def test_weights_in_tmpfs_are_not_counted_again_as_host_memory():
    shape = read_shape(TINY)
    plain = Budget("tiny", shape, Free(host=1 << 40, source="MemAvailable"), n_gpu_layers=0).estimate(64)
    limit = plain.host - shape.weights // 2  # the weights do not fit again; the rest does
    free = Free(host=limit, source="MemAvailable")
    with pytest.raises(MemoryCheckError):
        Budget("tiny", shape, free, n_gpu_layers=0).check(64)
    shared = Budget("tiny", shape, free, n_gpu_layers=0, weights_in="tmpfs").check(64)
    assert shared.host == plain.host - shape.weights and shared.weights_shared
    with pytest.raises(MemoryCheckError, match="weights in tmpfs: shared"):
        Budget("tiny", shape, Free(host=1 << 20, source="MemAvailable"), n_gpu_layers=0, weights_in="tmpfs").check(64)


@pytest.mark.skipif(memory.in_ram("/dev/shm/x") != "tmpfs", reason="no tmpfs at /dev/shm here")
def test_a_model_copied_to_dev_shm_is_known_to_be_in_ram(tmp_path):
    import shutil
    import tempfile

    from dlmcli.api import memory_budget

    with tempfile.TemporaryDirectory(dir="/dev/shm") as d:
        p = Path(d) / "tiny.gguf"
        shutil.copy(TINY, p)
        assert memory_budget(p, "tiny").weights_in == "tmpfs"
    assert memory_budget(TINY, "tiny").weights_in == memory.in_ram(TINY)


@pytest.mark.parametrize("need, free, shown", [
    (200 << 20, 50 << 20, ("200 MiB", "50 MiB", "")),  # apart already: as gib() shows them
    ((102 << 20) + 300_000, 102 << 20, ("102.3 MiB", "102.0 MiB", "")),
    ((1 << 30) + 5, (1 << 30) - (100 << 10), ("1.0 GiB", "1024 MiB", ", 100 KiB short")),  # 1.000 and 1.000
])
def test_two_figures_that_would_print_alike_get_more_digits(need, free, shown):
    assert memory.gib_pair(need, free) == shown


def test_a_refusal_never_says_it_needs_what_is_free():
    shape = read_shape(TINY)
    for gap in (1, 3000, 300_000):
        need = estimate(shape, 64).host
        with pytest.raises(MemoryCheckError) as e:
            Budget("tiny", shape, Free(host=need - gap, source="MemAvailable"), n_gpu_layers=0).check(64)
        message = str(e.value)
        said_need = message.split("needs about ")[1].split(" of memory")[0]
        said_free = message.split(" but ")[1].split(" is free")[0]
        assert said_need != said_free or " short)" in message, message
    want = estimate(shape, 64, n_gpu_layers=-1, have_gpu=True).device
    free = Free(host=1 << 40, source="MemAvailable", gpus=(("CUDA0", want - 10, 1 << 34),))
    with pytest.raises(MemoryCheckError, match=r"is free on CUDA0 \(10 bytes short\); "):
        Budget("tiny", shape, free, n_gpu_layers=-1).check(64)


def test_a_refusal_with_no_other_advice_has_no_dangling_or():
    with pytest.raises(MemoryCheckError) as e:
        Budget("tiny", read_shape(TINY), Free(host=1 << 20, source="MemAvailable"), n_gpu_layers=0).check(64)
    assert "; try --no-memory-check to load it anyway" in str(e.value)
