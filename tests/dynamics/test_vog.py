"""Variance of gradients where the input gradient is known in closed form: for a linear model the
gradient of the label's logit with respect to the input is the label's weight row."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from infscope.dynamics import input_gradients, vog, vog_from_checkpoints
from infscope.errors import InputError


def linear_checkpoints(k: int = 3, d: int = 4, c: int = 3, seed: int = 0) -> list[nn.Linear]:
    torch.manual_seed(seed)
    models = []
    for _ in range(k):
        model = nn.Linear(d, c)
        nn.init.normal_(model.weight)
        models.append(model)
    return models


def test_vog_by_hand():
    # two checkpoints of a 2-input, 2-class linear model; label 0 rows: [1, 2] then [3, 2]
    grads = np.array([[[1.0, 2.0], [0.0, 5.0]], [[3.0, 2.0], [0.0, 5.0]]])  # [K=2, n=2, d=2]
    # example 0: variances over checkpoints (1, 0) -> mean 0.5; example 1: unchanged -> 0
    score = vog(grads, labels=[0, 1], ids=["p", "q"], normalize=None)
    assert score.train_ids == ["p", "q"] and score.method == "vog"
    np.testing.assert_allclose(score.values, [0.5, 0.0])
    assert score.metadata["higher_is_harder"] is True


def test_vog_of_linear_models_is_the_variance_of_weight_rows():
    models = linear_checkpoints()
    torch.manual_seed(1)
    x = torch.randn(12, 4)
    y = torch.tensor([0, 1, 2] * 4)
    weights = np.stack([m.weight.detach().double().numpy() for m in models])  # [K, C, d]
    per_class = weights.var(axis=0).mean(axis=1)  # mean over inputs of the variance of each row
    expected_raw = per_class[y.numpy()]

    for k, model in enumerate(models):  # the input gradient is the label's weight row
        np.testing.assert_allclose(input_gradients(model, x, y), weights[k][y.numpy()], rtol=1e-6)
    stacked = torch.stack([input_gradients(m, x, y, batch_size=5) for m in models])
    np.testing.assert_allclose(vog(stacked, y, normalize=None).values, expected_raw, rtol=1e-6)
    raw = vog_from_checkpoints(models, x, y, batch_size=5, normalize=None)
    np.testing.assert_allclose(raw.values, expected_raw, rtol=1e-6)
    assert raw.train_ids == [str(i) for i in range(12)]

    # default: z-scored within each class; for a linear model the input gradient does not depend
    # on the input, so every example of a class has the same raw VoG and z-scores to 0
    normalized = vog_from_checkpoints(models, x, y, ids=[f"e{i}" for i in range(12)])
    assert normalized.method == "vog+class_zscore"
    assert normalized.train_ids[0] == "e0"
    np.testing.assert_allclose(normalized.values, 0.0, atol=1e-9)


def text_model_checkpoints(k: int = 3):
    """Embedding -> masked mean over tokens -> Linear: d logit_y / d emb[t] = W[y] / length at
    real tokens and 0 at padding."""

    class MeanPool(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(20, 3)
            self.head = nn.Linear(3, 2)

        def forward(self, input_ids, attention_mask):
            mask = attention_mask.unsqueeze(-1).to(torch.float32)
            pooled = (self.emb(input_ids) * mask).sum(1) / mask.sum(1)
            return self.head(pooled)

    torch.manual_seed(0)
    return [MeanPool() for _ in range(k)]


def test_vog_on_embedding_outputs_with_a_padding_mask():
    models = text_model_checkpoints()
    input_ids = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0], [7, 0, 0, 0]])
    attention_mask = (input_ids != 0).long()
    labels = torch.tensor([0, 1, 1])
    lengths = attention_mask.sum(1).double().numpy()
    weights = np.stack([m.head.weight.detach().double().numpy() for m in models])
    expected = weights.var(axis=0).mean(axis=1)[labels.numpy()] / lengths**2
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}

    grads = input_gradients(models[0], inputs, labels, input_module="emb")
    assert grads.shape == (3, 4, 3)
    assert torch.all(grads[1, 2:] == 0) and torch.all(grads[2, 1:] == 0)
    np.testing.assert_allclose(
        grads[2, 0].numpy(), weights[0][1] / 1.0, rtol=1e-6
    )  # one real token: the full weight row
    score = vog_from_checkpoints(
        models, inputs, labels, input_module="emb", mask=attention_mask, normalize=None
    )
    np.testing.assert_allclose(score.values, expected, rtol=1e-5)
    # without the mask the padding's zero variance dilutes short examples
    unmasked = vog_from_checkpoints(models, inputs, labels, input_module="emb", normalize=None)
    np.testing.assert_allclose(unmasked.values, expected * lengths / 4, rtol=1e-5)
    assert score.metadata["input_module"] == "emb"
    # class 1 holds a 2-token and a 1-token example: the shorter one varies more -> z = -1, +1
    normalized = vog_from_checkpoints(
        models, inputs, labels, input_module="emb", mask=attention_mask
    )
    np.testing.assert_allclose(normalized.values, [0.0, -1.0, 1.0], atol=1e-9)


def test_vog_runs_on_a_tiny_bert_embedding_output(tokenizer):
    from tests.conftest import SENTENCES, tiny_bert

    models = [tiny_bert(tokenizer.vocab_size), tiny_bert(tokenizer.vocab_size)]
    with torch.no_grad():
        models[1].classifier.weight.mul_(2.0)  # a different "checkpoint"
    batch = dict(tokenizer(SENTENCES[:3], padding=True, return_tensors="pt"))
    labels = torch.tensor([0, 1, 0])
    for model in models:
        model.train()
    grads = input_gradients(models[0], batch, labels, input_module="bert.embeddings")
    assert grads.shape == (*batch["input_ids"].shape, 16)
    assert models[0].training  # the mode is restored
    score = vog_from_checkpoints(
        models, batch, labels, input_module="bert.embeddings", mask=batch["attention_mask"]
    )
    assert np.isfinite(score.values).all() and score.values.shape == (3,)
    # doubling the head doubles the input gradient: per dimension the variance over the two
    # checkpoints (g, 2g) is g^2 / 4, so raw VoG = mean over real tokens of grads^2 / 4
    raw = vog_from_checkpoints(
        models,
        batch,
        labels,
        input_module="bert.embeddings",
        mask=batch["attention_mask"],
        normalize=None,
    )
    mask = batch["attention_mask"].unsqueeze(-1).double()
    expected = ((grads.double() ** 2 / 4) * mask).sum((1, 2)) / (mask.sum((1, 2)) * 16)
    np.testing.assert_allclose(raw.values, expected.numpy(), rtol=1e-4)


def test_vog_input_errors():
    with pytest.raises(InputError, match="checkpoints >= 2"):
        vog(np.zeros((1, 3, 2)), [0, 0, 0])
    with pytest.raises(InputError, match="labels must have shape"):
        vog(np.zeros((2, 3, 2)), [0, 0])
    with pytest.raises(InputError, match="at least 2 checkpoints"):
        vog_from_checkpoints(linear_checkpoints(k=1), torch.zeros(2, 4), [0, 1])
    with pytest.raises(InputError, match="must be a float tensor"):
        input_gradients(nn.Embedding(3, 2), torch.tensor([0, 1]), [0, 1])
    with pytest.raises(InputError, match="mask"):
        vog(np.zeros((2, 3, 2)), [0, 0, 0], mask=np.ones((2, 2)))
