"""MODEL parsing, quant and shard selection, and the catalog: no network, no server."""

from __future__ import annotations

import pytest

from dlmcli.errors import HubError, ModelError
from dlmcli.hub import CATALOG, catalog_entry_for, family_defaults, parse_spec
from dlmcli.hub.files import quant_of, select_group

REQUIRED = [
    "llada-8b-instruct",
    "llada-8b-base",
    "llada-1.5",
    "llada-moe-7b-a1b-instruct",
    "dream-7b-instruct",
    "dream-coder-7b-instruct",
    "rnd1-30b-a3b-base",
]


def test_parse_paths(tmp_path, monkeypatch):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    assert parse_spec(str(f)).kind == "path"
    monkeypatch.chdir(tmp_path)
    assert parse_spec("m.gguf").path.name == "m.gguf"
    with pytest.raises(ModelError, match="model file not found: missing.gguf"):
        parse_spec("missing.gguf")
    with pytest.raises(ModelError, match="not found"):
        parse_spec("./dir/missing")
    with pytest.raises(ModelError, match="is a directory"):
        parse_spec(str(tmp_path))


def test_parse_bundled(tmp_path, monkeypatch):
    monkeypatch.setattr("dlmcli.hub.spec.BUNDLED_DIR", tmp_path)
    (tmp_path / "tiny-llada.gguf").write_bytes(b"GGUF")
    ref = parse_spec("tiny-llada")
    assert ref.kind == "bundled" and ref.path == tmp_path / "tiny-llada.gguf"


def test_parse_catalog_and_repos():
    ref = parse_spec("llada-8b-instruct")
    assert (ref.kind, ref.repo, ref.wanted_quant) == ("hub", "mradermacher/LLaDA-8B-Instruct-GGUF", "Q4_K_M")
    assert parse_spec("llada-8b-instruct:q8_0").wanted_quant == "Q8_0"
    ref = parse_spec("someone/Some-Model-GGUF")
    assert (ref.repo, ref.quant, ref.filename, ref.entry) == ("someone/Some-Model-GGUF", None, None, None)
    ref = parse_spec("someone/Some-Model-GGUF:iq4_xs")
    assert ref.quant == "IQ4_XS"
    ref = parse_spec("someone/Some-Model-GGUF:sub/File-Q4_K_M.gguf")
    assert ref.filename == "sub/File-Q4_K_M.gguf" and ref.quant is None
    # a catalog repo written out in full still gets the catalog's quant and defaults
    ref = parse_spec("bartowski/Dream-org_Dream-v0-Instruct-7B-GGUF")
    assert ref.entry.name == "dream-7b-instruct" and ref.wanted_quant == "Q4_K_M"


@pytest.mark.parametrize("bad", ["", "no-such-model", "a--b/c", "a/b:c:d"])
def test_parse_rejects(bad):
    with pytest.raises(ModelError):
        parse_spec(bad)


def test_unknown_name_lists_catalog():
    with pytest.raises(ModelError, match="unknown model lada; .*llada-8b-instruct"):
        parse_spec("lada")


FILES = [
    "README.md",
    "M.Q4_K.gguf",
    "M.Q4_K_M.gguf",
    "M.IQ4_XS.gguf",
    "M.Q8_0.gguf",
    "mmproj-M-F16.gguf",
    "big/M-Q6_K-00002-of-00003.gguf",
    "big/M-Q6_K-00001-of-00003.gguf",
    "big/M-Q6_K-00003-of-00003.gguf",
    "M-F16-00001-of-00002.gguf",  # second shard missing
    "M.Q2_K.gguf.part1of2",
]


@pytest.mark.parametrize(
    ("quant", "expected"),
    [
        ("Q4_K", "M.Q4_K.gguf"),  # a whole tag: not Q4_K_M
        ("Q4_K_M", "M.Q4_K_M.gguf"),
        ("q8_0", "M.Q8_0.gguf"),
        ("IQ4_XS", "M.IQ4_XS.gguf"),
        (None, "M.Q4_K_M.gguf"),  # the default quant
    ],
)
def test_quant_selection(quant, expected):
    assert select_group(FILES, "o/r", quant, None).files == (expected,)


def test_shards_are_grouped_in_order():
    g = select_group(FILES, "o/r", "Q6_K", None)
    assert g.files == tuple(f"big/M-Q6_K-0000{i}-of-00003.gguf" for i in (1, 2, 3))
    assert g.first.endswith("00001-of-00003.gguf") and g.sharded


def test_selection_errors():
    with pytest.raises(HubError, match=r"no Q5_K_S GGUF in o/r; available: IQ4_XS, Q4_K, Q4_K_M, Q6_K, Q8_0"):
        select_group(FILES, "o/r", "Q5_K_S", None)
    with pytest.raises(HubError, match="F16 GGUF is incomplete .*shard\\(s\\) 2 of 2 missing"):
        select_group(FILES, "o/r", "F16", None)
    with pytest.raises(HubError, match="partXofY"):
        select_group(["M.Q2_K.gguf.part1of2", "M.Q2_K.gguf.part2of2"], "o/r", None, None)
    with pytest.raises(HubError, match="o/r has no GGUF files"):
        select_group(["README.md"], "o/r", None, None)
    with pytest.raises(HubError, match="matches several"):
        select_group(["a.Q8_0.gguf", "b.Q8_0.gguf"], "o/r", "Q8_0", None)
    with pytest.raises(HubError, match="has no file x.gguf"):
        select_group(FILES, "o/r", None, "x.gguf")


def test_single_gguf_is_the_default():
    assert select_group(["rnd1-base-0910-q8_0.gguf"], "o/r", None, None).first == "rnd1-base-0910-q8_0.gguf"
    assert select_group(["rnd1-base-0910-q8_0.gguf"], "o/r", "Q8_0", None).first == "rnd1-base-0910-q8_0.gguf"


def test_quant_of():
    assert quant_of("LLaDA-8B-Instruct.Q4_K_M.gguf") == "Q4_K_M"
    assert quant_of("rnd1-base-0910-q8_0.gguf") == "Q8_0"
    assert quant_of("Dream-org_Dream-v0-Instruct-7B-IQ4_XS.gguf") == "IQ4_XS"
    assert quant_of("Q4_K_M/model-00001-of-00002") == "Q4_K_M"
    assert quant_of("model.gguf") is None


def test_catalog_contents():
    names = [e.name for e in CATALOG]
    assert set(REQUIRED) <= set(names) and len(names) == len(set(names))
    for e in CATALOG:
        assert e.repo.count("/") == 1 and e.quant and e.license and e.size_gb > 0
        assert e.arch in ("llada", "llada-moe", "dream", "rnd1")
        assert e.defaults["steps"] == e.defaults["gen_length"]
        parse_spec(e.name)  # every name resolves to a hub ref


def test_catalog_entry_for_and_family_defaults(tmp_path):
    assert catalog_entry_for("dream-coder-7b-instruct").defaults["temperature"] == 0.1
    assert catalog_entry_for("MRADERMACHER/llada-8b-instruct-gguf:Q8_0").name == "llada-8b-instruct"
    assert catalog_entry_for("someone/else") is None
    assert catalog_entry_for(str(tmp_path / "x.gguf")) is None
    llada = catalog_entry_for("llada-8b-instruct").defaults
    assert (llada["schedule"], llada["block_length"], llada["algorithm"], llada["temperature"]) == (
        "block",
        32,
        "low-confidence",
        0.0,
    )
    dream = family_defaults("dream")
    assert (dream["schedule"], dream["algorithm"], dream["temperature"], dream["top_p"]) == (
        "timestep",
        "entropy",
        0.2,
        0.95,
    )
    assert family_defaults("gpt2") == {}
    dream["temperature"] = 9  # a copy: the catalog is not changed
    assert family_defaults("dream")["temperature"] == 0.2


def test_catalog_repo_case_is_canonical():
    assert parse_spec("MRADERMACHER/llada-8b-instruct-gguf").repo == "mradermacher/LLaDA-8B-Instruct-GGUF"


def test_entry_defaults_are_plain_dicts_that_cannot_change_the_catalog():
    entry = catalog_entry_for("llada-8b-instruct")
    d = entry.defaults
    assert type(d) is dict
    d["steps"] = 1
    assert catalog_entry_for("llada-8b-instruct").defaults["steps"] == 128
