"""The family registry (dlmcli.families): the one place that knows each family's defaults, shift and schedule."""

from __future__ import annotations

import subprocess
import sys

from dlmcli import defaults, families
from dlmcli.api import Model, load
from dlmcli.hub import CATALOG, catalog_entry_for, family_defaults

from .conftest import ROOT


def test_every_family_resolves_to_its_own_defaults():
    for fam in families.FAMILIES:
        p = defaults.resolve(fam.arch, {}, {})
        assert p.schedule == fam.schedule
        for key, value in fam.generation.items():
            assert getattr(p, key) == value, (fam.arch, key)
        assert family_defaults(fam.arch) == dict(fam.generation)
    # An unknown architecture runs with the fallback's generation defaults, and shifted logits.
    assert defaults.resolve("newarch", {}, {}) == defaults.resolve(families.FALLBACK_ARCH, {}, {})
    assert families.shift_logits("newarch") is True and family_defaults("newarch") == {}
    assert [families.shift_logits(f.arch) for f in families.FAMILIES] == [False, False, True, True]
    assert families.shift_logits("llada", declared=True) is True  # the file's own key wins


def test_catalog_entries_carry_only_their_own_settings():
    for e in CATALOG:
        assert "prompt_format" not in e.defaults  # not a generation parameter
        assert set(e.overrides) <= defaults.FIELDS
    rnd1 = catalog_entry_for("rnd1-30b-a3b-base")
    assert rnd1.prompt_format == "Question: {prompt}\nAnswer:"
    assert rnd1.to_dict()["prompt_format"] == rnd1.prompt_format
    assert catalog_entry_for("dream-coder-7b-instruct").overrides == {"temperature": 0.1}
    # the family's layer under the entry's own, with the values the authors recommend
    coder = catalog_entry_for("dream-coder-7b-instruct").defaults
    assert (coder["temperature"], coder["top_p"], coder["algorithm"], coder["schedule"]) == (0.1, 0.95, "entropy",
                                                                                              "timestep")
    llada = catalog_entry_for("llada-8b-instruct").defaults
    assert (llada["block_length"], llada["algorithm"], llada["temperature"]) == (32, "low-confidence", 0.0)


def test_load_hands_the_catalog_entrys_prompt_format_to_the_model(monkeypatch, gguf_dir):
    # Wiring only: the catalog's RND1 file is 32 GB, so the name resolves to a small base model (no chat
    # template, as RND1 base) here.
    import dlmcli.hub

    base = gguf_dir / "notemplate.gguf"
    monkeypatch.setattr(dlmcli.hub, "resolve_model", lambda spec, allow_pull=False: base)
    with load("rnd1-30b-a3b-base") as m:
        assert m.prompt_format == "Question: {prompt}\nAnswer:" and m.catalog_defaults == {}
        framed = m.runtime.tokenize("Question: add 1 2\nAnswer:", add_special=True, parse_special=False)
        assert m.prompt_tokens("add 1 2") == framed
    with Model(base) as plain:
        assert plain.prompt_format is None and plain.prompt_tokens("add 1 2") != framed


def test_a_new_family_is_one_entry():
    # A family added to FAMILIES (and nowhere else) reaches the defaults, the catalog's family defaults,
    # the logits shift, and the CLI's help and messages.
    code = """
import dlmcli.families as f
f.FAMILIES += (f.Family("newdlm", "NewDLM", True, dict(schedule="timestep", gen_length=64, steps=48,
                                                       algorithm="margin", temperature=0.3)),)
from dlmcli import defaults
from dlmcli.hub import family_defaults
p = defaults.resolve("newdlm", {}, {})
assert (p.schedule, p.gen_length, p.steps, p.algorithm, p.temperature) == ("timestep", 64, 48, "margin", 0.3), p
assert family_defaults("newdlm")["steps"] == 48
assert f.shift_logits("newdlm") is True
assert "RND1 and NewDLM" in f.labels()
import sys
from dlmcli.cli import main
sys.argv = ["dlm", "--help"]
main()
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    assert "RND1 and NewDLM" in " ".join(r.stdout.decode().split()), r.stdout
