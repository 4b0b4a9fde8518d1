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


def test_a_template_is_compiled_once_and_a_broken_one_fails_every_time():
    from dlmcli import template

    tpl = "{% for m in messages %}[{{ m['content'] }}]{% endfor %}"
    before = template._compiled.cache_info()
    assert render_chat(tpl, MSG) == render_chat(tpl, [{"role": "user", "content": "hi"}]) == "[hi]"
    after = template._compiled.cache_info()
    assert after.misses - before.misses <= 1 and after.hits - before.hits >= 1
    for _ in range(2):  # a failed compile is not kept: the same error, not a cached half-template
        with pytest.raises(ModelError, match="failed to render"):
            render_chat("{% if %}", MSG)


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
@pytest.mark.parametrize("thread", [False, True], ids=["main-thread", "other-thread"])
def test_hostile_or_broken_templates_fail_safely(template, needle, thread):
    """Off the main thread (a server's) no signal can stop a render: the helper process does it."""
    import os
    import threading

    got = []

    def render():
        try:
            got.append(render_chat(template, MSG))
        except ModelError as e:
            got.append(e)

    if thread:
        t = threading.Thread(target=render)
        t.start()
        t.join(30)
        assert not t.is_alive()
    else:
        render()
    assert isinstance(got[0], ModelError) and needle in str(got[0]), got
    assert not os.path.exists("/tmp/dlm-pwned")
    ok = "{% for m in messages %}<{{ m['role'] }}>{% endfor %}"
    assert render_chat(ok, MSG) == "<user>"  # and the next render works


@pytest.mark.slow
def test_cli_reports_a_hostile_template_in_one_line(tmp_path):
    from tools.ggufgen import write_random_gguf

    path = write_random_gguf(tmp_path / "evil.gguf", "llada", chat_template="{{ ''.__class__.__base__.__subclasses__() }}")
    r = run_dlm("generate", "-m", path, "-n", "4", "hi")
    assert r.returncode == 1
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "--raw" in lines[0]
    ok = run_dlm("generate", "-m", path, "-n", "4", "--raw", "hi")
    assert ok.returncode == 0, ok.stderr
