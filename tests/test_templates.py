"""Chat templates are untrusted: rendered in a bounded sandbox, failures become one clear error."""

from __future__ import annotations

import pytest

from dlmcli.errors import ModelError
from dlmcli.template import render_chat

from .conftest import run_dlm

MSG = [{"role": "user", "content": "hi"}]


def test_renders_an_ordinary_template():
    tpl = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}<a>{% endif %}"
    assert render_chat(tpl, MSG) == "<user>hi<a>"
    assert render_chat("{{ bos_token }}x", MSG, bos_token="<s>") == "<s>x"


@pytest.mark.parametrize("template,needle", [
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "unsafe"),
    ("{{ messages.__class__.__init__.__globals__ }}", "unsafe"),
    ("{{ cycler.__init__.__globals__.os.system('touch /tmp/dlm-pwned') }}", "unsafe"),
    ("{% set x = messages.append(1) %}", "unsafe"),
    ("{{ 'a' * 10**10 }}", "too large"),
    ("{{ 2 ** 100000 }}", "too large"),
    ("{% for i in range(10**9) %}{% endfor %}", "Range too big"),
    ("{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}", "took over"),
    ("{% for i in range(99999) %}{{ 'x' * 60000 }}{% endfor %}", "characters"),
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "failed to render"),
    ("{{ raise_exception('roles must alternate') }}", "roles must alternate"),
    ("{% if %}", "failed to render"),
])
def test_hostile_or_broken_templates_fail_safely(template, needle, tmp_path):
    with pytest.raises(ModelError, match=needle):
        render_chat(template, MSG)
    import os

    assert not os.path.exists("/tmp/dlm-pwned")


def test_cli_reports_a_hostile_template_in_one_line(tmp_path):
    from dlmcli.ggufgen import write_random_gguf

    path = write_random_gguf(tmp_path / "evil.gguf", "llada", chat_template="{{ ''.__class__.__base__.__subclasses__() }}")
    r = run_dlm("generate", "-m", path, "-n", "4", "hi")
    assert r.returncode == 1
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "--raw" in lines[0]
    ok = run_dlm("generate", "-m", path, "-n", "4", "--raw", "hi")
    assert ok.returncode == 0, ok.stderr
