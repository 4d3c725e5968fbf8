"""Data: examples with stable ids."""

from infscope.data.examples import ExampleSet, positions
from infscope.data.ids import read_ids

__all__ = ["ExampleSet", "positions", "read_ids"]
