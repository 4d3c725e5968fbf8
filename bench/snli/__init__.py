"""Helpers of ``bench/pruning_snli.py`` (imported after the script has pinned the thread count)."""
