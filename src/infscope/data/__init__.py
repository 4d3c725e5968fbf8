"""Data: examples with stable ids."""

from infscope.data.examples import ExampleSet

__all__ = ["ExampleSet"]
