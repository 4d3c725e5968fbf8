"""A Selection in a notebook: a pandas frame in pick order and an escaped HTML table."""

from infscope.selection import Selection


def test_selection_to_pandas_and_html():
    selection = Selection([2, 0], ["c", "<b>a</b>"], "top-k", reasons=["best", "second"])
    frame = selection.to_pandas([{"text": "t0"}, {"text": "t1"}, {"text": "t2"}])
    assert list(frame["id"]) == ["c", "<b>a</b>"] and list(frame["text"]) == ["t2", "t0"]
    html = selection._repr_html_()
    assert "<b>a</b>" not in html and "&lt;b&gt;a&lt;/b&gt;" in html
    assert html.index(">c<") < html.index("&lt;b&gt;")
