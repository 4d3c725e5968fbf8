"""Search over a feature store: approximate nearest-neighbour indexes (FAISS) and a lexical
candidate prefilter, for top-k influence queries over large training sets. Names are imported
on first use (``infscope.index.client`` alone loads neither torch nor FAISS)."""

from infscope.lazy import exports

_NAMES = {
    "INDEX_KINDS": "infscope.index.ann",
    "IndexConfig": "infscope.index.ann",
    "InfluenceIndex": "infscope.index.ann",
    "recall_at_k": "infscope.index.recall",
    "LexicalPrefilter": "infscope.index.prefilter",
    "candidate_recall": "infscope.index.recall",
    "score_candidates": "infscope.index.prefilter",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = exports(__name__, _NAMES)
