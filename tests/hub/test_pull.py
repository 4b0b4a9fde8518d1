"""pull, models, info, rm and offline use, against the fake Hub with the real huggingface_hub client."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from dlmcli.errors import HubError, ModelError
from dlmcli.hub import resolve_model
from dlmcli.hub.download import PullProgress

from .conftest import DREAM, FOLDERS, LLADA, SHARDED, cache_repo, closed_port


def rows(cli) -> dict[str, dict]:
    r = cli("models", "--json")
    assert r.exit_code == 0, r.all
    return {row["name"]: row for row in json.loads(r.stdout)}


def test_fresh_install_lists_the_catalog_without_network(env, hub, cli):
    r = cli("models")
    assert r.exit_code == 0
    for name in (
        "llada-8b-instruct",
        "llada-8b-base",
        "llada-1.5",
        "llada-moe-7b-a1b-instruct",
        "dream-7b-instruct",
        "dream-coder-7b-instruct",
        "rnd1-30b-a3b-base",
    ):
        assert name in r.stdout
    assert "default model: tiny-llada" in r.stderr
    assert hub.stats.requests == []
    assert not Path(env["HF_HOME"]).exists()  # listing writes nothing either


def test_pull_models_info_rm(env, hub, cli, files):
    r = cli("pull", "llada-8b-instruct")
    assert r.exit_code == 0, r.all
    path = Path(r.stdout.strip())
    assert path.name == "LLaDA-8B-Instruct.Q4_K_M.gguf" and path.read_bytes() == files["llada_q4"]
    assert path.is_symlink() and "pulled llada-8b-instruct" in r.stderr
    assert str(path).startswith(str(Path(env["HF_HOME"]) / "hub" / "models--mradermacher--LLaDA-8B-Instruct-GGUF"))
    # one API call, one HEAD, one download; the bytes exactly once
    assert [(q.method, q.path.split("/")[1]) for q in hub.stats.requests] == [
        ("GET", "api"),
        ("HEAD", "mradermacher"),
        ("GET", "cdn"),
    ]
    assert hub.stats.served_total() == len(files["llada_q4"])

    row = rows(cli)["llada-8b-instruct"]
    assert (row["status"], row["size"], row["path"], row["approx"]) == (
        "downloaded",
        len(files["llada_q4"]),
        str(path),
        False,
    )

    info = json.loads(cli("info", "llada-8b-instruct", "--json").stdout)
    assert (info["architecture"], info["quant"], info["mask_token_id"], info["chat_template"]) == (
        "llada",
        "Q4_K_M",
        90,
        True,
    )
    assert info["catalog"]["defaults"]["block_length"] == 32
    assert resolve_model("llada-8b-instruct") == path

    hub.reset_stats()
    r = cli("pull", "llada-8b-instruct")
    assert r.exit_code == 0 and "up to date" in r.stderr and r.stdout.strip() == str(path)
    assert hub.stats.count("/cdn") == 0 and hub.stats.count("/api") == 1

    r = cli("rm", "llada-8b-instruct", "--yes")
    assert r.exit_code == 0 and "removed llada-8b-instruct" in r.stderr
    assert not path.exists() and not cache_repo(env, LLADA).exists()
    assert rows(cli)["llada-8b-instruct"]["status"] == "available"
    r = cli("rm", "llada-8b-instruct")
    assert r.exit_code == 1 and "Error: llada-8b-instruct is not downloaded; nothing to remove" in r.stderr


def test_quant_resolution(env, hub, cli, files):
    r = cli("pull", f"{LLADA}:q8_0", "-q")
    assert r.exit_code == 0, r.all
    assert Path(r.stdout.strip()).read_bytes() == files["llada_q8"]
    r = cli("pull", "llada-8b-instruct:Q2_K", "-q")
    assert Path(r.stdout.strip()).name == "LLaDA-8B-Instruct.Q2_K.gguf"
    r = cli("pull", f"{DREAM}", "-q")  # no quant: Q4_K_M
    assert Path(r.stdout.strip()).name == "Dream-org_Dream-v0-Instruct-7B-Q4_K_M.gguf"
    r = cli("pull", f"{LLADA}:LLaDA-8B-Instruct.Q4_K_M.gguf", "-q")
    assert Path(r.stdout.strip()).read_bytes() == files["llada_q4"]
    listing = rows(cli)
    assert listing["llada-8b-instruct:Q8_0"]["status"] == "downloaded"
    assert listing["llada-8b-instruct:Q2_K"]["source"] == "hub"
    assert listing["dream-7b-instruct"]["status"] == "downloaded"
    # two quants of one repo: removing one leaves the other
    assert cli("rm", "llada-8b-instruct:Q8_0", "-y").exit_code == 0
    assert resolve_model("llada-8b-instruct:Q2_K").is_file()
    with pytest.raises(ModelError, match="not downloaded"):
        resolve_model(f"{LLADA}:Q8_0")


def test_missing_quant_lists_what_exists(env, hub, cli):
    r = cli("pull", "llada-8b-instruct:Q5_K_S")
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines()[-1] == (f"Error: no Q5_K_S GGUF in {LLADA}; available: Q2_K, Q4_K_M, Q8_0")
    assert hub.stats.count("/cdn") == 0 and not (cache_repo(env, LLADA) / "blobs").exists()


def test_shards_are_pulled_whole_and_loaded_from_the_first(env, hub, cli, files):
    r = cli("pull", SHARDED, "-q")
    assert r.exit_code == 0, r.all
    first = Path(r.stdout.strip())
    assert first.name == "Model-Q4_K_M-00001-of-00003.gguf"
    for i in (1, 2, 3):
        assert (first.parent / f"Model-Q4_K_M-0000{i}-of-00003.gguf").read_bytes() == files[f"shard{i}"]
    assert resolve_model(SHARDED) == first
    info = json.loads(cli("info", SHARDED, "--json").stdout)
    assert len(info["files"]) == 3 and info["tensors"] == 6
    assert info["size"] == sum(len(files[f"shard{i}"]) for i in (1, 2, 3))
    assert rows(cli)[f"{SHARDED}:Q4_K_M"]["size"] == info["size"]
    r = cli("rm", SHARDED, "-y")
    assert "3 file(s)" in r.stderr and not cache_repo(env, SHARDED).exists()
    # shards in a quant-named folder
    r = cli("pull", f"{FOLDERS}:Q4_K_M", "-q")
    assert r.exit_code == 0, r.all
    assert r.stdout.strip().endswith("Q4_K_M/Model-Q4_K_M-00001-of-00002.gguf")


def test_offline_keeps_working(env, hub, cli, monkeypatch):
    assert cli("pull", "dream-7b-instruct", "-q").exit_code == 0
    path = resolve_model("dream-7b-instruct")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.reset_stats()
    assert resolve_model("dream-7b-instruct") == path
    assert resolve_model(DREAM) == path
    assert json.loads(cli("info", "dream-7b-instruct", "--json").stdout)["architecture"] == "dream"
    assert rows(cli)["dream-7b-instruct"]["status"] == "downloaded"
    r = cli("pull", "dream-7b-instruct")
    assert r.exit_code == 0 and r.stdout.strip() == str(path) and "HF_HUB_OFFLINE is set" in r.stderr
    r = cli("pull", "llada-8b-instruct")
    assert r.exit_code == 1
    assert "Error: HF_HUB_OFFLINE is set and llada-8b-instruct is not downloaded; unset HF_HUB_OFFLINE" in r.stderr
    with pytest.raises(HubError, match="not downloaded and HF_HUB_OFFLINE is set"):
        resolve_model("llada-8b-instruct", allow_pull=True)
    assert hub.stats.requests == []  # offline means not one request


def test_downloaded_models_survive_a_dead_network(env, hub, cli, monkeypatch):
    assert cli("pull", "dream-7b-instruct", "-q").exit_code == 0
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    assert resolve_model("dream-7b-instruct").is_file()
    r = cli("pull", "dream-7b-instruct")
    assert r.exit_code == 0 and "cannot reach" in r.stderr and "using the downloaded copy" in r.stderr


def test_generate_hint_and_pull_on_demand(env, hub):
    with pytest.raises(ModelError) as err:
        resolve_model("dream-7b-instruct")
    assert str(err.value) == (
        "model dream-7b-instruct is not downloaded; run 'dlm pull dream-7b-instruct' or pass --pull"
    )
    assert hub.stats.requests == []  # resolving never goes to the network by itself
    path = resolve_model("dream-7b-instruct", allow_pull=True, progress=PullProgress())
    assert path.name.endswith("Q4_K_M.gguf") and path.is_file()


def test_catalog_repo_with_different_case_shares_the_download(env, hub, cli):
    assert cli("pull", "llada-8b-instruct", "-q").exit_code == 0
    assert resolve_model(LLADA.upper()) == resolve_model("llada-8b-instruct")


def test_models_table_shows_partial_and_default(env, hub, cli, monkeypatch):
    monkeypatch.setenv("DLM_MODEL", "dream-7b-instruct")
    assert cli("pull", "dream-7b-instruct", "-q").exit_code == 0
    r = cli("models")
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("dream-7b-instruct"))
    assert line.startswith("dream-7b-instruct *") and line.endswith("downloaded")
    assert "* default model: dream-7b-instruct (DLM_MODEL)" in r.stderr
    assert all(ln == ln.rstrip() for ln in r.stdout.splitlines())
    r = cli("models", "--downloaded", "--json")
    rows = json.loads(r.stdout)
    assert [row["name"] for row in rows if row["source"] != "bundled"] == ["dream-7b-instruct"]


def test_checksums_are_verified(env, hub, cli):
    hub.corrupt.add("LLaDA-8B-Instruct.Q4_K_M.gguf")
    r = cli("pull", "llada-8b-instruct")
    assert r.exit_code == 1
    assert "Error: LLaDA-8B-Instruct.Q4_K_M.gguf failed its sha256 check and was deleted" in r.stderr
    assert not cache_repo(env, LLADA).exists()  # the bad bytes are gone and nothing else was left
    hub.corrupt.clear()
    assert cli("pull", "llada-8b-instruct", "-q").exit_code == 0


def test_dropped_connection_is_resumed_in_the_same_pull(env, hub, cli, files):
    size = len(files["llada_q4"])
    hub.drop_after["LLaDA-8B-Instruct.Q4_K_M.gguf"] = 100_000
    r = cli("pull", "llada-8b-instruct")
    assert r.exit_code == 0, r.all
    assert "connection lost" in r.stderr
    ranges = hub.stats.ranges("LLaDA-8B-Instruct.Q4_K_M.gguf")
    assert ranges[0] is None and ranges[1] == "bytes=100000-"
    assert hub.stats.served["LLaDA-8B-Instruct.Q4_K_M.gguf"] == size
    digest = hashlib.sha256(Path(r.stdout.strip()).read_bytes()).hexdigest()
    assert digest == hashlib.sha256(files["llada_q4"]).hexdigest()


def test_server_ignoring_range_restarts_cleanly(env, hub, cli, files):
    hub.drop_after["LLaDA-8B-Instruct.Q4_K_M.gguf"] = 50_000
    hub.ignore_range = True
    r = cli("pull", "llada-8b-instruct")
    assert r.exit_code == 0, r.all
    assert "ignored the resume request" in r.stderr
    assert Path(r.stdout.strip()).read_bytes() == files["llada_q4"]


def test_local_files_and_bundled_need_no_pull(tmp_path, env, hub, cli, monkeypatch):
    p = tmp_path / "m.gguf"
    p.write_bytes(b"GGUF")
    r = cli("pull", str(p))
    assert r.exit_code == 0 and r.stdout.strip() == str(p) and "nothing to pull" in r.stderr
    assert resolve_model(str(p)) == p
    monkeypatch.setattr("dlmcli.hub.spec.BUNDLED_DIR", tmp_path)
    assert resolve_model("m") == p
    r = cli("rm", "m")
    assert r.exit_code == 1 and "is bundled with dlm" in r.stderr
    assert rows(cli)["m"]["status"] == "bundled"


def test_the_cache_is_the_standard_one(env, hub, cli, files):
    """huggingface_hub reads what dlm pulled, and dlm uses what huggingface_hub downloaded."""
    import huggingface_hub

    cache_dir = Path(env["HF_HOME"]) / "hub"
    path = Path(cli("pull", "llada-8b-instruct", "-q").stdout.strip())
    found = huggingface_hub.try_to_load_from_cache(LLADA, "LLaDA-8B-Instruct.Q4_K_M.gguf", cache_dir=cache_dir)
    assert Path(found) == path
    info = huggingface_hub.scan_cache_dir(cache_dir)
    assert info.warnings == [] and [r.repo_id for r in info.repos] == [LLADA]
    assert next(iter(info.repos)).size_on_disk == len(files["llada_q4"])

    got = huggingface_hub.hf_hub_download(
        DREAM, "Dream-org_Dream-v0-Instruct-7B-Q4_K_M.gguf", cache_dir=cache_dir, endpoint=hub.url
    )
    assert resolve_model("dream-7b-instruct") == Path(got)
    assert rows(cli)["dream-7b-instruct"]["status"] == "downloaded"


def test_expired_download_url_is_renewed(env, hub, cli, files):
    hub.expire_once.add("LLaDA-8B-Instruct.Q4_K_M.gguf")
    r = cli("pull", "llada-8b-instruct", "-q")
    assert r.exit_code == 0, r.all
    assert hub.stats.count("/mradermacher", "HEAD") == 2  # asked the Hub for a fresh location once
    assert Path(r.stdout.strip()).read_bytes() == files["llada_q4"]
