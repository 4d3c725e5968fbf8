"""On-disk feature store: sharded, memory-mapped, resumable per-example feature vectors."""

from infscope.store.feature_store import CheckpointInfo, FeatureStore, StoreSpec
from infscope.store.layout import BlockLayout, ModuleBlock

__all__ = ["BlockLayout", "CheckpointInfo", "FeatureStore", "ModuleBlock", "StoreSpec"]
