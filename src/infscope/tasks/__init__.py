"""Tasks: what is differentiated for training examples (loss) and queries (measurement)."""

from infscope.tasks.base import Task, margin_loss, to_device
from infscope.tasks.classification import ClassificationTask, RegressionTask
from infscope.tasks.huggingface import (
    HFCausalLMTask,
    HFSequenceClassificationTask,
    is_peft_model,
    model_inputs,
)

__all__ = [
    "ClassificationTask",
    "HFCausalLMTask",
    "HFSequenceClassificationTask",
    "RegressionTask",
    "Task",
    "is_peft_model",
    "margin_loss",
    "model_inputs",
    "to_device",
]
