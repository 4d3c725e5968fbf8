"""infscope: which training examples matter, for what, and what to do about it.

The names a user starts from, imported on first use (``import infscope`` loads neither torch nor
any estimator)::

    import infscope
    analysis = infscope.Analysis(model, task, projection="kronecker", dim=4096)
    analysis.extract(infscope.ExampleSet.from_file("train.jsonl"), "runs/train")
    analysis.extract(infscope.ExampleSet.from_file("test.jsonl"), "runs/test",
                     gradient="measurement")
    scores = infscope.score("runs/train", "runs/test", method="tracin")

Everything else lives in the package for its step: ``data``, ``tasks``, ``gradients``,
``store``, ``curvature``, ``attribution``, ``selection``, ``evaluation`` ...
"""

from infscope.lazy import exports

__version__ = "0.1.0"

_NAMES = {
    "Analysis": "infscope.analysis",
    "score": "infscope.analysis",
    "ExampleSet": "infscope.data",
    "FeatureStore": "infscope.store",
    "ModuleSelection": "infscope.gradients",
    "ProjectionConfig": "infscope.gradients",
    "build_estimator": "infscope.attribution.registry",
    "load_scores": "infscope.attribution.scores",
    "load_model_and_task": "infscope.tasks.loading",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = exports(__name__, _NAMES)
