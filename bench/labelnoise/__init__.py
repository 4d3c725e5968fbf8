"""Helpers of ``bench/audit_cleanlab.py``: text tasks on frozen MiniLM embeddings with label noise
(``tasks``) and the classifier every method shares (``model``)."""
