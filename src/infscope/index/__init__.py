"""Search over a feature store: approximate nearest-neighbour indexes (FAISS) and a lexical
candidate prefilter, for top-k influence queries over large training sets."""

from infscope.index.ann import INDEX_KINDS, IndexConfig, InfluenceIndex, recall_at_k
from infscope.index.prefilter import LexicalPrefilter, candidate_recall, score_candidates

__all__ = [
    "INDEX_KINDS",
    "IndexConfig",
    "InfluenceIndex",
    "LexicalPrefilter",
    "candidate_recall",
    "recall_at_k",
    "score_candidates",
]
