"""The conversation API: messages checked, answers from the real models, history kept and fitted to the context."""

from __future__ import annotations

import pytest

from dlmcli.errors import GenerationError, UsageError
from dlmcli.hub import BUNDLED_DIR
from dlmcli.messages import check_messages, plain_transcript

needs_tiny = pytest.mark.skipif(not (BUNDLED_DIR / "tiny-llada.gguf").is_file(), reason="bundled tiny-llada missing")


# --- messages (pure) --------------------------------------------------------------------------
def test_messages_are_reduced_to_role_and_text():
    msgs = [{"role": "system", "content": "be brief", "name": "x"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": ""}]
    assert check_messages(msgs) == [{"role": "system", "content": "be brief"},
                                    {"role": "user", "content": "a\nb"},
                                    {"role": "assistant", "content": ""}]


@pytest.mark.parametrize("messages,needle", [
    ("hi", "must be a list"),
    ({"role": "user", "content": "hi"}, "must be a list"),
    (None, "must be a list"),
    ([], "empty"),
    (["hi"], r"messages\[0\] must be an object"),
    ([{"role": "tool", "content": "x"}], r"messages\[0\]\.role must be one of system, user, assistant \(got 'tool'\)"),
    ([{"content": "x"}], r"role must be one of .* \(got None\)"),
    ([{"role": "user"}], r"messages\[0\]\.content is missing"),
    ([{"role": "user", "content": 3}], "must be a string or a list of text parts"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], "'image_url' part; only text parts"),
    ([{"role": "user", "content": [{"type": "text", "text": None}]}], r"content\[0\]\.text must be a string"),
])
def test_bad_messages_raise_one_clear_usage_error(messages, needle):
    with pytest.raises(UsageError, match=needle):
        check_messages(messages)


def test_plain_transcript_for_models_without_a_template():
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"}]
    assert plain_transcript(msgs, None) == "S\n\nUser: q1\nAssistant: a1\n\nUser: q2\nAssistant:"
    assert plain_transcript(msgs[1:], "Question: {prompt}\nAnswer:") == \
        "Question: q1\nAnswer: a1\n\nQuestion: q2\nAnswer:"


# --- the real models -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    from dlmcli.api import load

    with load("tiny-llada") as m:
        yield m


@needs_tiny
def test_chat_answers_a_messages_list_like_generate(tiny):
    msgs = [{"role": "user", "content": "reverse hello"}]
    r = tiny.chat(msgs)
    assert r.text == "olleh"
    assert r.prompt_tokens == tiny.prompt_tokens("reverse hello")
    with_system = tiny.chat_tokens([{"role": "system", "content": "be brief"}] + msgs)
    assert with_system == tiny.prompt_tokens("reverse hello", system="be brief")
    with pytest.raises(UsageError, match="role must be one of"):
        tiny.chat([{"role": "robot", "content": "hi"}])


@needs_tiny
def test_a_conversation_feeds_each_turn_the_ones_before(tiny):
    from dlmcli import Conversation

    conv = Conversation(tiny)
    first = conv.send("reverse hello")
    assert first.text == "olleh"
    turn = conv.denoise("add 12 30")
    second = turn.result()
    assert turn.dropped == 0
    # The second prompt is the first prompt, the first answer and its end of turn, then the new message.
    assert second.prompt_tokens[:len(first.prompt_tokens)] == first.prompt_tokens
    assert second.prompt_tokens == tiny.chat_tokens([
        {"role": "user", "content": "reverse hello"}, {"role": "assistant", "content": "olleh"},
        {"role": "user", "content": "add 12 30"}])
    assert conv.messages == [{"role": "user", "content": "reverse hello"},
                             {"role": "assistant", "content": "olleh"},
                             {"role": "user", "content": "add 12 30"},
                             {"role": "assistant", "content": second.text}]
    # (No claim about the second answer: the tiny models were trained on single turns only.)


@needs_tiny
def test_an_unfinished_turn_leaves_the_conversation_as_it_was(tiny):
    from dlmcli import Conversation

    conv = Conversation(tiny, system="s", steps=16)
    conv.send("reverse abc")
    before = conv.messages
    turn = conv.denoise("reverse hello")
    next(turn)  # one pass, then abandoned (what a Ctrl-C does)
    assert conv.messages == before
    assert conv.send("reverse hello").text == "olleh"
    assert conv.messages[-2:] == [{"role": "user", "content": "reverse hello"},
                                  {"role": "assistant", "content": "olleh"}]


def test_settings_are_checked_when_set(llada):
    from dlmcli import Conversation

    conv = Conversation(llada, gen_length=8, steps=8, block_length=8)
    with pytest.raises(UsageError, match="^steps must be between"):  # the library names the parameter
        conv.set(steps=0)
    assert conv.params().steps == 8
    conv.set(steps=4)
    assert conv.params().steps == 4
    conv.set(steps=None)  # back to the default: steps follow gen_length
    assert conv.params().steps == 8
    with pytest.raises(UsageError):
        Conversation(llada, temperature=-1)


def test_a_long_conversation_drops_its_oldest_exchanges(llada):
    """The random llada has a 128-token context; a character-level vocabulary: one token per character."""
    from dlmcli import Conversation

    conv = Conversation(llada, system="sys", gen_length=16, steps=4, block_length=16)
    dropped = []
    for i in range(6):
        turn = conv.denoise(f"message {i} " + "x" * 20)
        turn.result()
        dropped.append(turn.dropped)
        assert len(turn.prompt_tokens) + 16 <= llada.context_length
    assert sum(dropped) > 0 and dropped[0] == 0
    # The newest exchange is always there, the oldest ones are gone, the system prompt stays.
    msgs = conv.messages
    assert msgs[0] == {"role": "system", "content": "sys"}
    assert msgs[-2]["content"].startswith("message 5 ")
    assert not any(m["content"].startswith("message 0 ") for m in msgs)


def test_a_message_that_cannot_fit_is_refused_and_changes_nothing(llada):
    from dlmcli import Conversation

    conv = Conversation(llada, gen_length=16, steps=4, block_length=16)
    conv.send("hello")
    before = conv.messages
    with pytest.raises(GenerationError, match="this message does not fit: .* context of 128; shorten it"):
        conv.denoise("y" * 200)
    assert conv.messages == before


def test_loading_messages_takes_the_system_prompt(llada):
    from dlmcli import Conversation

    conv = Conversation(llada)
    conv.load([{"role": "system", "content": "S"}, {"role": "user", "content": "q"},
               {"role": "assistant", "content": "a"}])
    assert conv.system == "S" and len(conv.history) == 2
    with pytest.raises(UsageError, match=r"messages\[1\]\.role"):
        conv.load([{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}])
    assert conv.system == "S" and len(conv.history) == 2  # a bad file changes nothing
    conv.clear()
    assert conv.messages == [{"role": "system", "content": "S"}]


def test_a_model_without_a_template_gets_a_plain_transcript(gguf_dir):
    from dlmcli.api import Model

    with Model(gguf_dir / "notemplate.gguf") as m:
        assert m.chat_tokens([{"role": "user", "content": "hi"}]) == m.prompt_tokens("hi")
        msgs = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
                {"role": "user", "content": "q2"}]
        assert m.chat_tokens(msgs) == m.runtime.tokenize(plain_transcript(msgs, None), add_special=True,
                                                         parse_special=False)


@needs_tiny
def test_a_forward_pass_aborted_by_ctrl_c_leaves_the_model_usable(tiny):
    """A Ctrl-C during llama_decode sets the flag its abort callback reads: the pass stops, KeyboardInterrupt
    follows, and the next turn (what dlm chat runs after a cancelled one) gets the same answer as before."""
    import signal

    from dlmcli import Conversation
    from dlmcli.runtime import native

    conv = Conversation(tiny)
    turn = conv.denoise("reverse hello")
    native._set_flag(signal.SIGINT)  # what the SIGINT handler does while a pass runs
    with pytest.raises(KeyboardInterrupt):
        next(turn)
    assert not native._interrupted["flag"] and conv.messages == []
    assert conv.send("reverse hello").text == "olleh"
