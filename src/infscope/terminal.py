"""Text from data, made safe to print on a terminal.

Training texts are untrusted: a NUL, an ANSI escape sequence (``ESC [ 2 J`` clears the screen,
``ESC ] 8`` writes links) or a bidirectional override (U+202E shows ``txt.exe`` as ``exe.txt``)
printed raw changes what the terminal shows. :func:`printable` replaces every such character by a
visible escape (``\\x00``, ``\\x1b``, ``\\u202e``), so the reader sees that it is there. Only what is
printed is escaped: files (CSV, JSON, reports) keep the data as it is.
"""

from __future__ import annotations

import unicodedata

#: Unicode's bidirectional formatting characters (embeddings, overrides, isolates, marks)
BIDI_CONTROLS = frozenset([0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)])
#: line and paragraph separators: they break a terminal line like a newline
SEPARATORS = frozenset([0x2028, 0x2029])
SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(character: str) -> str:
    if character in SHORT:
        return SHORT[character]
    code = ord(character)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def is_unsafe(character: str) -> bool:
    """A control character (C0, DEL, C1), a bidirectional formatting character or a line
    separator: anything that moves the cursor, changes the terminal or reorders text."""
    code = ord(character)
    return unicodedata.category(character) == "Cc" or code in BIDI_CONTROLS or code in SEPARATORS


def printable(text: object, keep_newlines: bool = False) -> str:
    """``str(text)`` with every unsafe character (:func:`is_unsafe`) shown as an escape;
    ``keep_newlines`` keeps ``\\n`` for multi-line output (a summary), otherwise the text stays
    on one line (a table cell, an error message)."""
    text = str(text)
    if not any(is_unsafe(c) for c in text):
        return text
    return "".join(
        _escaped(c) if is_unsafe(c) and not (keep_newlines and c == "\n") else c for c in text
    )
