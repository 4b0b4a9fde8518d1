"""`dlm info` shows the file's own dlm.* settings and the generation defaults a run starts from, each
with the layer it came from (issue 15.3), for a path, a bundled name and a catalog name not downloaded."""

from __future__ import annotations

import json

from .conftest import run_dlm


def _defaults(*args, env=None) -> dict:
    r = run_dlm("info", *args, "--json", env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_the_bundled_models_file_settings_and_where_each_default_comes_from():
    data = _defaults("tiny-llada")
    assert data["dlm_keys"] == {"dlm.gen_length": 16, "dlm.steps": 16, "dlm.block_length": 8}
    g = data["generation_defaults"]
    assert g["gen_length"] == {"value": 16, "source": "file"} and g["block_length"] == {"value": 8, "source": "file"}
    assert g["schedule"] == {"value": "block", "source": "family llada"}
    assert g["algorithm"]["source"] == "family llada" and g["top_k"] == {"value": 0, "source": "dlm"}
    assert "eps" not in g  # the timestep schedule's knob: not this model's
    text = run_dlm("info", "tiny-llada").stdout.decode()
    assert "dlm.gen_length=16, dlm.steps=16, dlm.block_length=8" in text
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines()[text.splitlines().index(
        next(line for line in text.splitlines() if line.startswith("generation defaults"))) + 1:] if line.startswith("  ")}
    assert rows["block_length"] == ["8", "file"] and rows["schedule"] == ["block", "family", "llada"]


def test_a_dream_file_shows_eps_not_a_block_length():
    g = _defaults("tiny-dream")["generation_defaults"]
    assert g["schedule"] == {"value": "timestep", "source": "family dream"} and "block_length" not in g
    assert g["eps"]["source"] == "family dream" and g["gen_length"]["source"] == "file"


def test_a_path_whose_length_does_not_fit_the_family_block_shows_the_fitted_value(tmp_path):
    from tools.ggufgen import write_random_gguf

    p = write_random_gguf(tmp_path / "m.gguf", "llada", extra_kv={"dlm.gen_length": 70})
    g = _defaults(p)["generation_defaults"]
    assert g["gen_length"] == {"value": 70, "source": "file"}
    assert g["block_length"] == {"value": 35, "source": "fitted"}  # divides 70, closest to the family's 32
    assert g["steps"]["value"] % 2 == 0  # splits over the 2 blocks
    assert run_dlm("generate", "-m", p, "-s", "2", "--raw", "x").returncode == 0  # what info says, runs


def test_a_catalog_model_not_downloaded_is_described_from_the_catalog(tmp_path):
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub")}
    r = run_dlm("info", "dream-coder-7b-instruct", env=env)  # README's example used to fail unless pulled
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert "not downloaded; 'dlm pull dream-coder-7b-instruct' fetches it" in out and "--pull" not in out
    data = _defaults("dream-coder-7b-instruct", env=env)
    g = data["generation_defaults"]
    assert data["downloaded"] is False and data["catalog"]["repo"].endswith("Dream-Coder-v0-Instruct-7B-GGUF")
    assert g["temperature"] == {"value": 0.1, "source": "catalog"} and g["top_p"]["source"] == "family dream"
    t = run_dlm("info", "dream-coder-7b-instruct", "--template", env=env)
    assert t.returncode == 1 and b"run 'dlm pull dream-coder-7b-instruct'" in t.stderr
