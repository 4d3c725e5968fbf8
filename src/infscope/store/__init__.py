"""On-disk feature store: sharded, memory-mapped, resumable per-example feature vectors."""

from infscope.store.feature_store import FeatureStore
from infscope.store.layout import BlockLayout, ModuleBlock
from infscope.store.spec import CheckpointInfo, StoreSpec

__all__ = ["BlockLayout", "CheckpointInfo", "FeatureStore", "ModuleBlock", "StoreSpec"]
