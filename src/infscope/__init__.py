"""infscope: which training examples matter, for what, and what to do about it."""

__version__ = "0.1.0"
