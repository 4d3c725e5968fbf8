"""Search over a feature store: approximate nearest-neighbour indexes (FAISS) and a lexical
candidate prefilter, for top-k influence queries over large training sets."""

from infscope.index.ann import INDEX_KINDS, IndexConfig, InfluenceIndex, recall_at_k

__all__ = ["INDEX_KINDS", "IndexConfig", "InfluenceIndex", "recall_at_k"]
