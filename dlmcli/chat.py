"""``dlm chat``: a conversation in the terminal, each answer denoised live (docs/chat.md).

In a terminal: prompt_toolkit reads each message (line editing, history, multi-line input), the
live view draws the answer as it denoises and is erased when it ends, and the answer stays in the
scrollback as plain text. With stdin piped: each line is one turn and only the answers reach stdout.
The conversation itself is ``dlmcli.conversation.Conversation``; this module only talks to the person.
"""

from __future__ import annotations

import json
import sys
import unicodedata
from pathlib import Path

from .errors import DlmError, TemplateError, UsageError
from .render import MAX_DELAY

PROMPT = ">>> "
CONTINUATION = "... "
HELP = """\
Commands:
  /help            this list
  /exit            leave (also /quit, or Ctrl-D)
  /clear           forget the conversation (the system prompt stays)
  /system [TEXT]   set the system prompt; without TEXT, remove it
  /set KEY VALUE   change a setting (VALUE 'default': the model's own)
  /show            the settings and how much of the context is used
  /save FILE       write the conversation as JSON messages
  /load FILE       read one back (a JSON list of role/content messages)
Enter sends. Alt-Enter, Esc Enter or a trailing backslash: a new line.
Ctrl-C stops the answer being denoised; the conversation is kept."""

# /set keys: GenerationParams fields and their value types, then the view's own settings.
INT, FLOAT, TEXT, BOOL = "a whole number", "a number", "a word", "on or off"
SETTINGS = {
    "gen_length": INT, "steps": INT, "block_length": INT, "schedule": TEXT, "algorithm": TEXT,
    "alg_temp": FLOAT, "temperature": FLOAT, "top_k": INT, "top_p": FLOAT, "cfg": FLOAT, "eps": FLOAT,
    "threshold": FLOAT, "factor": FLOAT, "early_stop": BOOL, "seed": INT,
}
VIEW_SETTINGS = {"delay": FLOAT, "visual": BOOL}
_ALIASES = {"length": "gen_length", "n": "gen_length", "s": "steps", "t": "temperature", "a": "algorithm"}
_TRUE, _FALSE = ("on", "true", "yes", "1"), ("off", "false", "no", "0")

# The options of 'dlm generate' that make sense for a conversation.
SHARED = ("model", "gen_length", "steps", "block_length", "schedule", "algorithm", "alg_temp", "temperature",
          "top_k", "top_p", "cfg", "eps", "threshold", "factor", "early_stop", "seed", "system", "visual",
          "delay", "pull", "ngl", "threads", "rpc", "split_mode", "tensor_split", "main_gpu", "cache",
          "memory_check", "verbose")


def register(app) -> None:
    from .cli import borrow_options, generate

    app.command("chat")(borrow_options(generate, SHARED)(chat))  # the app's command group is the boundary


def chat(**opts):
    """Hold a conversation: each answer denoises live, then stays as text. Pipe lines in to script it."""
    from .cli import DEVICE_OPTIONS, check_utf8, open_model
    from .conversation import Conversation

    check_utf8(opts["system"], "--system")
    interactive = sys.stdin is not None and not sys.stdin.closed and sys.stdin.isatty()
    with open_model(opts["model"], opts["ngl"], opts["threads"], opts["verbose"], opts["pull"],
                    **{k: opts[k] for k in DEVICE_OPTIONS}, cache=opts["cache"], memory_check=opts["memory_check"]) as m:
        conv = Conversation(m, system=opts["system"], **{k: opts[k] for k in SETTINGS})
        session = ChatSession(conv, visual=opts["visual"], delay=opts["delay"], verbose=opts["verbose"],
                              interactive=interactive)
        if interactive:
            session.interactive()
        else:
            session.piped(sys.stdin.buffer if sys.stdin is not None else None)


def note(message: str) -> None:
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()


def printable(text: str) -> str:
    """An answer safe to print on a terminal: newlines and tabs kept, every other control escaped
    (model output is untrusted: no cursor moves, no colours, no title changes)."""
    from .render.text import visible

    return "".join(ch if ch in "\n\t" or not (unicodedata.category(ch)[0] == "C"
                                               or unicodedata.category(ch) in ("Zl", "Zp"))
                   else visible(ch) for ch in text)


class _Leave(Exception):
    """/exit"""


class ChatSession:
    """The commands and turns of one ``dlm chat``; ``interactive()`` or ``piped()`` drives it."""

    def __init__(self, conv, *, visual, delay: float, verbose: bool, interactive: bool):
        self.conv = conv
        self.model = conv.model
        self.visual = visual
        self.delay = delay
        self.verbose = verbose
        self.interactive_mode = interactive

    # --- one turn ---------------------------------------------------------------------------
    def turn(self, text: str) -> None:
        from .cli import _drive, _sinks

        try:
            turn = self.conv.denoise(text)  # refuses a message that cannot fit, before anything is drawn
        except TemplateError as e:  # chat has no --raw: say what does work
            raise e.with_hint("a conversation needs it; 'dlm generate --raw' runs the model on plain text") from None
        if turn.dropped:
            n = turn.dropped
            note(f"The conversation outgrew the context of {self.model.context_length} tokens: dropped the "
                 f"oldest {n} exchange{'s' if n != 1 else ''}.")
        result = _drive(turn, _sinks(self.model, turn, text, self.visual, delay=self.delay, transient=True))
        answer = printable(result.text) if sys.stdout.isatty() else result.text
        sys.stdout.write(answer + "\n")
        sys.stdout.flush()
        if self.interactive_mode and result.finish_reason == "length":
            n = result.params.gen_length
            note(f"(the answer filled all {n} positions; '/set gen_length {2 * n}' gives longer ones room)")
        if self.verbose:
            t = result.timings
            note(f"{result.steps} steps, {len(result.tokens)} tokens, {len(result.prompt_tokens)} prompt tokens, "
                 f"{t.total_s:.2f}s (forward {t.forward_s:.2f}s), finish: {result.finish_reason}")

    # --- commands ---------------------------------------------------------------------------
    def command(self, line: str) -> None:
        """Run one /command; DlmError for anything wrong with it (the caller prints one line)."""
        name, arg = (line.strip().split(None, 1) + [""])[:2]  # any whitespace, a newline too, ends the name
        name = name.lower()
        if name == "/help":
            note(HELP)
        elif name in ("/exit", "/quit"):
            raise _Leave()
        elif name == "/clear":
            self.conv.clear()
            note("Conversation cleared.")
        elif name == "/system":
            self.conv.system = arg or None
            note(f"System prompt {'set' if arg else 'removed'}.")
        elif name == "/set":
            self.set(arg)
        elif name == "/show":
            self.show()
        elif name == "/save":
            self.save(arg)
        elif name == "/load":
            self.load(arg)
        else:
            raise UsageError(f"unknown command {name}; /help lists the commands")

    def set(self, arg: str) -> None:
        key, value = (arg.split(None, 1) + [""])[:2]
        value = value.strip()
        if not key or not value:
            raise UsageError("usage: /set KEY VALUE (/show lists the keys)")
        raw_key = key
        key = key.lstrip("-").replace("-", "_").lower()
        key = _ALIASES.get(key, key)
        kind = SETTINGS.get(key) or VIEW_SETTINGS.get(key)
        if kind is None:
            keys = ", ".join(list(SETTINGS) + list(VIEW_SETTINGS))
            raise UsageError(f"unknown setting {raw_key!r}; one of: {keys}")
        parsed = None if value.lower() == "default" else _parse(value, kind, key)
        if key == "delay":
            parsed = 0.0 if parsed is None else parsed
            if not 0 <= parsed <= MAX_DELAY:
                raise UsageError(f"delay must be between 0 and {MAX_DELAY:g} seconds (got {value})")
            self.delay = parsed
        elif key == "visual":
            self.visual = parsed
        else:
            self.conv.set(**{key: parsed})
        shown = self.conv.params().to_dict()[key] if key in SETTINGS else getattr(self, key)
        note(f"{key} = {_fmt(shown, key)}")

    def show(self) -> None:
        params = self.conv.params().to_dict()
        own = self.conv.overrides
        lines = [f"model        {self.model.name}"]
        for key in SETTINGS:
            lines.append(f"{key:<12} {_fmt(params[key], key)}{'' if key in own else '  (default)'}")
        visual = "when stderr is a terminal" if self.visual is None else _fmt(self.visual)
        lines += [f"{'delay':<12} {_fmt(self.delay)}", f"{'visual':<12} {visual}"]
        system = self.conv.system
        lines.append(f"system       {printable(system) if system else '(none)'}")
        n = len(self.conv.history)
        used = len(self.model.chat_tokens(self.conv.messages)) if self.conv.messages else 0
        limit = self.model.context_length
        lines.append(f"conversation {n} message{'s' if n != 1 else ''}, {used}"
                     + (f" of {limit} context tokens (+{params['gen_length']} for the answer)" if limit
                        else " prompt tokens"))
        note("\n".join(lines))

    def save(self, arg: str) -> None:
        if not arg:
            raise UsageError("usage: /save FILE")
        path = Path(arg).expanduser()
        data = json.dumps(self.conv.messages, ensure_ascii=False, indent=2) + "\n"
        try:
            path.write_text(data, encoding="utf-8")
        except OSError as e:
            raise DlmError(f"cannot write {path}: {e.strerror or e}") from None
        n = len(self.conv.messages)
        note(f"Saved {n} message{'s' if n != 1 else ''} to {path}.")

    def load(self, arg: str) -> None:
        if not arg:
            raise UsageError("usage: /load FILE")
        path = Path(arg).expanduser()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise DlmError(f"cannot read {path}: {e.strerror or e}") from None
        except UnicodeDecodeError as e:
            raise DlmError(f"{path} is not valid UTF-8 (byte {e.start})") from None
        except json.JSONDecodeError as e:
            raise DlmError(f"{path} is not JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
        if isinstance(data, dict) and "messages" in data:  # an OpenAI request body works too
            data = data["messages"]
        self.conv.load(data)
        n = len(self.conv.history)
        note(f"Loaded {n} message{'s' if n != 1 else ''} from {path}"
             + (" (with a system prompt)." if self.conv.system else "."))

    # --- drivers ----------------------------------------------------------------------------
    def handle(self, text: str) -> None:
        """One input: a /command, or a message (a leading '//' sends a message starting with '/')."""
        if text.startswith("/") and not text.startswith("//"):
            self.command(text)
        else:
            self.turn(text[1:] if text.startswith("//") else text)

    def piped(self, stdin) -> None:
        """Each line of STDIN is one turn (blank lines are skipped); the first failure ends the run."""
        if stdin is None:
            return
        for n, raw in enumerate(stdin, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DlmError(f"stdin line {n} is not valid UTF-8 (byte {e.start}); convert it first, "
                               f"e.g. with iconv") from None
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            try:
                self.handle(line)
            except _Leave:
                return
            except DlmError as e:
                e.args = (f"stdin line {n}: {e}",)
                raise

    def interactive(self) -> None:
        session = _prompt_session()
        limit = self.model.context_length
        note(f"Chatting with {self.model.name}" + (f" ({limit}-token context)" if limit else "")
             + ". /help: commands; Ctrl-D: leave.")
        while True:
            try:
                text = session.prompt(PROMPT)
            except _Discarded:
                continue
            except KeyboardInterrupt:
                note("(to leave, type /exit or press Ctrl-D)")
                continue
            except EOFError:
                return
            if not text.strip():
                continue
            try:
                self.handle(text.strip("\n"))
            except _Leave:
                return
            except KeyboardInterrupt:
                note("Cancelled; the conversation is as it was.")
            except DlmError as e:
                note(f"Error: {e}")


class _Discarded(Exception):
    """Ctrl-C on a line with text: the line is dropped and a fresh prompt shown, as in a shell."""


def _prompt_session():
    """prompt_toolkit over the terminal: Enter sends, Alt-Enter / Esc Enter / a trailing backslash
    start a new line, Ctrl-C clears the line (or, on an empty one, says how to leave), Ctrl-D leaves."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import InMemoryHistory
    from prompt_toolkit.key_binding import KeyBindings
    from prompt_toolkit.output.defaults import create_output

    keys = KeyBindings()

    @keys.add("escape", "enter")
    def _newline(event):
        event.current_buffer.insert_text("\n")

    @keys.add("enter")
    def _send(event):
        buf = event.current_buffer
        if buf.document.is_cursor_at_the_end and buf.text.endswith("\\"):
            buf.delete_before_cursor(1)
            buf.insert_text("\n")
        else:
            buf.validate_and_handle()

    @keys.add("c-c")
    def _interrupt(event):
        event.app.exit(exception=_Discarded() if event.current_buffer.text else KeyboardInterrupt())

    return PromptSession(
        history=InMemoryHistory(), key_bindings=keys, multiline=True,
        prompt_continuation=lambda width, _line, wrap: "" if wrap else CONTINUATION.rjust(width),
        output=create_output(always_prefer_tty=True),  # stdout may be a file; the prompt stays on the terminal
    )


def _parse(value: str, kind: str, key: str):
    try:
        if kind == INT:
            return int(value)
        if kind == FLOAT:
            return float(value)
    except ValueError:
        raise UsageError(f"{key} must be {kind} (got {value!r})") from None
    if kind == BOOL:
        low = value.lower()
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
        raise UsageError(f"{key} must be {kind} (got {value!r})")
    return value


def _fmt(value, key: str = "") -> str:
    if value is None:
        return "random" if key == "seed" else "off"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)
