"""save_scores: every score saved in the data's order (not the order training first saw the
examples), readable by the pruning study as it reads any saved score."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infscope.attribution import SelfInfluence, load_scores
from infscope.dynamics import DynamicsRecorder, aum, el2n, save_scores
from infscope.errors import InputError
from infscope.evaluation.pruning import load_pruning_scores


@pytest.fixture
def shuffled_recorder():
    """Four examples recorded over two epochs, each epoch in another shuffled order."""
    rng = np.random.default_rng(0)
    logits = {f"e{i}": torch.tensor(rng.normal(size=(2, 3)), dtype=torch.float32) for i in range(4)}
    labels = {"e0": 0, "e1": 1, "e2": 2, "e3": 0}
    recorder = DynamicsRecorder()
    for epoch, order in enumerate((["e2", "e0", "e3", "e1"], ["e1", "e3", "e0", "e2"])):
        for i in order:
            recorder.record([i], logits[i][epoch : epoch + 1], [labels[i]], epoch)
    return recorder


def test_scores_are_saved_in_the_given_order(shuffled_recorder, tmp_path):
    data_order = ["e0", "e1", "e2", "e3"]
    saved = save_scores(shuffled_recorder, tmp_path, data_order)
    assert set(saved) == {"el2n", "forgetting_events", "aum"}
    assert el2n(shuffled_recorder).train_ids == ["e2", "e0", "e3", "e1"]  # the trap it avoids
    loaded = load_scores(saved["el2n"], expect=SelfInfluence)
    assert loaded.train_ids == data_order
    expected = el2n(shuffled_recorder)
    by_id = dict(zip(expected.train_ids, expected.values))
    np.testing.assert_allclose(loaded.values, [by_id[i] for i in data_order])
    # prune reads them oriented high = hard: AUM (low = hard) negated by its recorded direction
    values, ids = load_pruning_scores({name: path for name, path in saved.items()})
    assert ids == data_order
    by_id = dict(zip(aum(shuffled_recorder).train_ids, aum(shuffled_recorder).values))
    np.testing.assert_allclose(values["aum"], [-by_id[i] for i in data_order])


def test_unknown_ids_names_and_repeats_are_errors(shuffled_recorder, tmp_path):
    with pytest.raises(InputError, match="never recorded"):
        save_scores(shuffled_recorder, tmp_path, ["e0", "e9"])
    with pytest.raises(InputError, match="unique"):
        save_scores(shuffled_recorder, tmp_path, ["e0", "e0"])
    with pytest.raises(InputError, match="unknown dynamics score"):
        save_scores(shuffled_recorder, tmp_path, ["e0"], names=["magic"])
