"""The default model: DLM_MODEL, then the config file, then the bundled tiny model.

The config file is TOML with top-level keys (``model = "llada-8b-instruct"``), at $DLM_CONFIG or the platform
config dir (~/.config/dlm/config.toml on Linux). `dlm config set` edits only the key's own line, so comments
and keys it does not know survive.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..errors import DlmError, UsageError

FALLBACK_MODEL = "tiny-llada"
KNOWN_KEYS = ("model",)
_KEY_LINE = re.compile(r"^\s*(?P<key>[A-Za-z0-9_-]+)\s*=")
_TABLE_LINE = re.compile(r"^\s*\[")


def config_path() -> Path:
    explicit = os.environ.get("DLM_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    import typer

    return Path(typer.get_app_dir("dlm")) / "config.toml"


def _loads(text: str, path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: top-level `key = "string"` lines are all dlm writes
        out = {}
        for line in text.splitlines():
            if _TABLE_LINE.match(line):
                break
            m = re.match(r'^\s*([A-Za-z0-9_-]+)\s*=\s*(".*")\s*(#.*)?$', line)
            if m:
                out[m.group(1)] = json.loads(m.group(2))
        return out
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path} is not valid TOML ({exc}); fix or delete it") from None


def read_config() -> dict:
    path = config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror}") from None
    return _loads(text, path)


def get_value(key: str) -> str | None:
    _check_key(key)
    value = read_config().get(key)
    return value if isinstance(value, str) and value.strip() else None


def set_value(key: str, value: str | None) -> Path:
    """Set (or, with None, remove) a top-level key, keeping the rest of the file as it is."""
    _check_key(key)
    path = config_path()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (FileNotFoundError, NotADirectoryError):  # no file yet (the write below says if it cannot be made)
        lines = []
    _loads("\n".join(lines), path)  # refuse to edit a file we cannot read back
    new_line = None if value is None else f"{key} = {json.dumps(value)}"
    out, done, in_table = [], False, False
    for line in lines:
        if _TABLE_LINE.match(line):
            if not done and new_line is not None:
                out.append(new_line)
                done = True
            in_table = True
        m = _KEY_LINE.match(line)
        if not in_table and m and m.group("key") == key:
            if not done and new_line is not None:
                out.append(new_line)
            done = True
            continue
        out.append(line)
    if not done and new_line is not None:
        out.append(new_line)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text("\n".join(out) + "\n" if out else "", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise DlmError(f"cannot write config file {path}: {exc.strerror or exc}; "
                       f"make its directory writable or point DLM_CONFIG at a writable file") from None
    return path


def _check_key(key: str) -> None:
    if key not in KNOWN_KEYS:
        raise UsageError(f"unknown config key {key!r}; known keys: {', '.join(KNOWN_KEYS)}")


def default_model() -> tuple[str, bool]:
    """The MODEL to use when none is given, and whether it is the bundled fallback."""
    return default_model_with_source()[:2]


def default_model_with_source() -> tuple[str, bool, str]:
    env = os.environ.get("DLM_MODEL", "").strip()
    if env:
        return env, False, "DLM_MODEL"
    value = get_value("model")
    if value:
        return value.strip(), False, str(config_path())
    return FALLBACK_MODEL, True, "bundled fallback"
