"""On-disk feature store: sharded, memory-mapped, resumable per-example feature vectors."""

from infscope.store.feature_store import CheckpointInfo, FeatureStore, StoreSpec

__all__ = ["CheckpointInfo", "FeatureStore", "StoreSpec"]
