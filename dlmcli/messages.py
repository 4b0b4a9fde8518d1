"""OpenAI-style chat messages, checked in one place (the API, the chat command and the server share it).

A message is ``{"role": "system" | "user" | "assistant", "content": str}``; content may also be a
list of ``{"type": "text", "text": str}`` parts (what the OpenAI API accepts), joined by newlines.
Everything else about a message is ignored, so nothing but role and text reaches a chat template.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .errors import UsageError

ROLES = ("system", "user", "assistant")
_SHAPE = "a list of {\"role\": ..., \"content\": ...} objects"


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _text(content, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and not isinstance(content, (bytes, bytearray)):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, Mapping) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise UsageError(f"{where}.content[{j}] is a {_short(kind)} part; only text parts "
                                 f"({{\"type\": \"text\", \"text\": ...}}) are supported")
            if not isinstance(part.get("text"), str):
                raise UsageError(f"{where}.content[{j}].text must be a string")
            parts.append(part["text"])
        return "\n".join(parts)
    if content is None:
        raise UsageError(f"{where}.content is missing; give the message's text as a string")
    raise UsageError(f"{where}.content must be a string or a list of text parts (got {type(content).__name__})")


def check_messages(messages, *, allow_empty: bool = False) -> list[dict]:
    """MESSAGES validated and reduced to ``{"role", "content"}`` dicts of strings; UsageError otherwise."""
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise UsageError(f"messages must be {_SHAPE} (got {type(messages).__name__})")
    if not messages and not allow_empty:
        raise UsageError("messages is empty; give at least one {\"role\": \"user\", \"content\": ...}")
    out = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, Mapping):
            raise UsageError(f"{where} must be an object with \"role\" and \"content\" (got {type(m).__name__})")
        role = m.get("role")
        if role not in ROLES:
            raise UsageError(f"{where}.role must be one of {', '.join(ROLES)} (got {_short(role)})")
        out.append({"role": role, "content": _text(m.get("content"), where)})
    return out


def plain_transcript(messages: list[dict], prompt_format: str | None) -> str:
    """A conversation as text for a model without a chat template: the system text, then each
    exchange in PROMPT_FORMAT (the catalog's, or 'User: ...\\nAssistant:') with its answer."""
    fmt = prompt_format or "User: {prompt}\nAssistant:"
    out, pending = [], None  # pending: the last formatted user turn, waiting for its answer
    for m in messages:
        if m["role"] == "system":
            out.append(m["content"] + "\n\n")
        elif m["role"] == "user":
            if pending is not None:
                out.append(pending + "\n\n")
            pending = fmt.replace("{prompt}", m["content"])
        else:
            out.append((pending + " " if pending is not None else "") + m["content"] + "\n\n")
            pending = None
    out.append(pending if pending is not None else fmt.split("{prompt}")[-1].lstrip())
    return "".join(out)
