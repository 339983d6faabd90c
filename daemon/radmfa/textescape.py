"""Untrusted text made safe to print: one line, no terminal control, nothing hidden.

User names, NAS-Identifiers, directory values and CLI arguments reach log lines, the audit
table and CSV files. A newline in one forges a second log line; an ANSI escape drives the
reader's terminal; a bidi override hides what follows. Every character Python does not call
printable (controls, line and paragraph separators, format characters, lone surrogates) is
replaced by its backslash escape.
"""

from __future__ import annotations

__all__ = ["escape_unprintable"]


def escape_unprintable(text: str, extra: str = "") -> str:
    """``text`` with every unprintable character, and those in ``extra``, as a backslash
    escape (``\\n``, ``\\x1b``, ``\\u2028``; ``"`` as ``\\"``). Text that needs none is
    returned as it is, checked in C: nearly all text takes that path."""
    if text.isprintable() and not (extra and any(ch in text for ch in extra)):
        return text
    out = []
    for ch in text:
        if ch.isprintable() and ch not in extra:
            out.append(ch)
        elif ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        else:
            out.append(ch.encode("unicode_escape", errors="backslashreplace").decode("ascii"))
    return "".join(out)
