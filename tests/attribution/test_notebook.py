"""Scores and SelfInfluence in a notebook: pandas frames and escaped HTML tables."""

import numpy as np

from infscope.attribution import Scores, SelfInfluence


def test_scores_to_pandas_and_html_escape_ids():
    values = np.array([[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]])
    scores = Scores(values, ["q0", "<script>alert(1)</script>"], ["a", "b", "c"], "tracin")
    frame = scores.to_pandas()
    assert frame.shape == (2, 3)
    assert frame.loc["q0", "c"] == 2.0 and list(frame.columns) == ["a", "b", "c"]
    html = scores._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;" in html
    # per query, most helpful first: q0's first "helps" row is c (2.0)
    assert html.index("helps") < html.index(">c<") < html.index(">a<")


def test_self_influence_to_pandas_ranks_the_most_suspicious_first():
    aum = SelfInfluence(
        np.array([3.0, -2.0, 0.5]), ["x", "y", "z"], "aum", {"higher_is_harder": False}
    )
    frame = aum.to_pandas()
    assert frame.loc["y", "rank"] == 1 and frame.loc["x", "rank"] == 3  # low AUM = suspicious
    html = aum._repr_html_()
    assert html.index(">y<") < html.index(">z<") < html.index(">x<")
