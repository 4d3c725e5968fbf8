"""Data: examples with stable ids."""

from infscope.data.examples import ExampleSet, positions

__all__ = ["ExampleSet", "positions"]
