"""The default model: DLM_MODEL, the config file, the bundled fallback; `dlm config`."""

from __future__ import annotations

import pytest

from dlmcli.errors import UsageError
from dlmcli.hub import default_model


@pytest.fixture
def conf(tmp_path, monkeypatch):
    path = tmp_path / "cfg" / "config.toml"
    monkeypatch.setenv("DLM_CONFIG", str(path))
    monkeypatch.delenv("DLM_MODEL", raising=False)
    return path


def test_precedence(conf, monkeypatch):
    assert default_model() == ("tiny-llada", True)
    conf.parent.mkdir()
    conf.write_text('model = "dream-7b-instruct"\n')
    assert default_model() == ("dream-7b-instruct", False)
    monkeypatch.setenv("DLM_MODEL", "llada-8b-instruct")
    assert default_model() == ("llada-8b-instruct", False)


def test_platform_config_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("DLM_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setattr("sys.platform", "linux")
    from dlmcli.hub.config import config_path

    assert config_path() == tmp_path / "dlm" / "config.toml"


def test_config_commands_keep_the_rest_of_the_file(conf, cli):
    conf.parent.mkdir()
    conf.write_text('# my settings\nmodel = "old"\n\n[ui]\ntheme = "dark"\n')
    r = cli("config", "set", "model", "llada-8b-instruct")
    assert r.exit_code == 0, r.all
    assert "not downloaded yet" in r.stderr
    assert conf.read_text() == '# my settings\nmodel = "llada-8b-instruct"\n\n[ui]\ntheme = "dark"\n'
    r = cli("config", "get", "model")
    assert r.stdout == "llada-8b-instruct\n" and str(conf) in r.stderr
    r = cli("config", "unset", "model")
    assert r.exit_code == 0 and "model" not in conf.read_text() and "theme" in conf.read_text()
    r = cli("config", "get")
    assert r.stdout == "tiny-llada\n" and "bundled fallback" in r.stderr
    assert cli("config", "path").stdout.strip() == str(conf)


def test_config_set_creates_the_file(conf, cli):
    r = cli("config", "set", "model", "someone/Repo-GGUF:Q8_0")
    assert r.exit_code == 0, r.all
    assert conf.read_text() == 'model = "someone/Repo-GGUF:Q8_0"\n'
    assert default_model() == ("someone/Repo-GGUF:Q8_0", False)


def test_config_errors(conf, cli):
    r = cli("config", "set", "colour", "red")
    assert r.exit_code == 2 and "Error: unknown config key 'colour'; known keys: model" in r.stderr
    r = cli("config", "set", "model", "no-such-model")
    assert r.exit_code == 1 and "Error: unknown model no-such-model" in r.stderr
    assert not conf.exists()
    conf.parent.mkdir()
    conf.write_text("model = \n")
    with pytest.raises(UsageError, match="is not valid TOML"):
        default_model()
    r = cli("config", "get", "model")
    assert r.exit_code == 2 and r.stderr.startswith("Error: config file ") and "fix or delete it" in r.stderr
