"""DynamicsCallback inside a Hugging Face Trainer records exactly what the plain-loop API records
from the same forward passes (same initial weights, same batches in the Trainer's shuffled order)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from infscope.dynamics import DynamicsCallback, DynamicsRecorder, IdCollator, el2n
from infscope.errors import InputError
from tests.conftest import SENTENCES, tiny_bert

transformers = pytest.importorskip("transformers")


def no_dropout(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model


@pytest.fixture
def train_examples(tokenizer):
    texts = SENTENCES + [s.upper() for s in SENTENCES]  # 12 examples
    return [{**tokenizer(text), "label": i % 2, "id": f"s{i:02d}"} for i, text in enumerate(texts)]


def training_args(tmp_path, **overrides):
    settings = dict(
        output_dir=str(tmp_path / "trainer"),
        per_device_train_batch_size=4,
        num_train_epochs=2,
        learning_rate=0.5,
        optim="sgd",
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        weight_decay=0.0,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_strategy="no",
        eval_strategy="no",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=0,
    )
    settings.update(overrides)
    return transformers.TrainingArguments(**settings)


def test_callback_matches_the_plain_loop(tmp_path, tokenizer, train_examples):
    model = no_dropout(tiny_bert(tokenizer.vocab_size))
    initial = {k: v.clone() for k, v in model.state_dict().items()}

    callback = DynamicsCallback(output_dir=tmp_path / "dynamics")
    collator = callback.data_collator(transformers.DataCollatorWithPadding(tokenizer))
    batches = []

    def spy(features):  # remember the batches in the order the Trainer draws them
        batch = collator(features)
        batches.append(
            {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        )
        return batch

    forwards = []
    model.register_forward_pre_hook(lambda m, a: forwards.append(1))
    trainer = transformers.Trainer(
        model=model,
        args=training_args(tmp_path),
        train_dataset=train_examples,
        data_collator=spy,
        callbacks=[callback],
    )
    trainer.train()

    assert len(batches) == 6 and len(forwards) == 6  # 3 batches x 2 epochs: no second pass
    recorder = callback.recorder
    ids = [ex["id"] for ex in train_examples]
    assert recorder.epochs == [0, 1]
    seen_order = [i for batch in batches[:3] for i in batch["infscope_example_ids"]]
    assert sorted(seen_order) == ids and seen_order != ids  # shuffled, each example once
    assert recorder._watch is None and not model._forward_hooks  # hooks removed after training

    # the plain loop: same initial weights, same batches, same optimizer, same records
    plain_model = no_dropout(tiny_bert(tokenizer.vocab_size))
    plain_model.load_state_dict(initial)
    plain_model.train()
    optimizer = torch.optim.SGD(plain_model.parameters(), lr=0.5)
    plain = DynamicsRecorder()
    plain.watch(plain_model, "classifier")
    for step, batch in enumerate(batches):
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
        output = plain_model(**inputs, labels=batch["labels"])
        plain.record(batch["infscope_example_ids"], output.logits, batch["labels"], step // 3)
        output.loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    a, b = recorder.to_arrays(ids), plain.to_arrays(ids)
    assert a.recorded.all() and a.epochs == b.epochs
    np.testing.assert_array_equal(a.labels, [i % 2 for i in range(12)])
    for name in ("loss", "probs", "margin", "correct", "grad_norm"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-5, atol=1e-6)
    assert np.isfinite(a.grad_norm).all()
    # training changed the model between epochs, so epoch 1 differs from epoch 0
    assert np.abs(a.loss[:, 1] - a.loss[:, 0]).max() > 1e-3

    # saved after each epoch and at the end
    loaded = DynamicsRecorder.load(tmp_path / "dynamics")
    np.testing.assert_array_equal(loaded.to_arrays(ids).loss, a.loss)
    assert el2n(loaded, epoch=1).train_ids == loaded.ids


def test_callback_requires_the_id_column(tmp_path, tokenizer, train_examples):
    model = tiny_bert(tokenizer.vocab_size)
    callback = DynamicsCallback(final_module=None)
    trainer = transformers.Trainer(
        model=model,
        args=training_args(tmp_path, remove_unused_columns=True, num_train_epochs=1),
        train_dataset=train_examples,
        data_collator=callback.data_collator(transformers.DataCollatorWithPadding(tokenizer)),
        callbacks=[callback],
    )
    with pytest.raises(InputError, match="remove_unused_columns=False"):
        trainer.train()

    # a plain collator drops the ids: the first training forward says what to do
    callback = DynamicsCallback(final_module=None)
    examples = [{k: v for k, v in ex.items() if k != "id"} for ex in train_examples]
    trainer = transformers.Trainer(
        model=model,
        args=training_args(tmp_path, num_train_epochs=1),
        train_dataset=examples,
        data_collator=transformers.DataCollatorWithPadding(tokenizer),
        callbacks=[callback],
    )
    with pytest.raises(InputError, match="without example ids"):
        trainer.train()
    callback.remove_hooks()


def test_id_collator_strips_and_carries_ids(tokenizer, train_examples):
    batch = IdCollator(transformers.DataCollatorWithPadding(tokenizer))(train_examples[:3])
    assert batch["infscope_example_ids"] == ["s00", "s01", "s02"]
    assert "id" not in batch
    assert torch.equal(batch["infscope_labels"], batch["labels"])
    with pytest.raises(InputError, match="has no 'id' field"):
        IdCollator()([{"input_ids": [1, 2], "label": 0}])
