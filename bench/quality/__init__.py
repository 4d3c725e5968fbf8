"""Helpers of ``bench/attribution_quality.py``: task definitions (``tasks``), infscope runs
(``ours``) and the anchor libraries (``anchors``)."""
