"""printable: control, ANSI and bidi characters from data never reach the terminal raw."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from infscope.terminal import is_unsafe, printable


def test_control_escape_and_bidi_characters_are_shown_as_escapes():
    assert printable("a\x00b") == "a\\x00b"
    assert printable("\x1b[2Jcleared") == "\\x1b[2Jcleared"
    assert printable("invoice\u202etxt.exe") == "invoice\\u202etxt.exe"
    assert printable("a\u2066b\u2069") == "a\\u2066b\\u2069"
    assert printable("line\nnext\ttab\rback") == "line\\nnext\\ttab\\rback"
    assert printable("\x9b31m") == "\\x9b31m"  # C1 CSI
    assert printable("a\u2028b") == "a\\u2028b"


def test_ordinary_text_is_unchanged_and_newlines_kept_on_request():
    text = "café, naïve — 東京 \U0001f600 [bold]x[/] \\ backslash"
    assert printable(text) == text
    assert printable("one\ntwo\x00", keep_newlines=True) == "one\ntwo\\x00"
    assert printable(12.5) == "12.5"


@given(st.text())
def test_nothing_unsafe_survives(text):
    shown = printable(text)
    assert not any(is_unsafe(c) for c in shown)
    assert "\n" not in shown
