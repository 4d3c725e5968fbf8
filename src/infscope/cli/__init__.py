"""Command-line interface (``infscope ...``)."""
