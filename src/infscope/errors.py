"""The exceptions infscope raises.

Every error infscope raises on purpose derives from :class:`InfscopeError`, so callers (and the CLI)
can tell an expected, explained failure from a bug. Messages say what went wrong and what to do.
"""

from __future__ import annotations


class InfscopeError(Exception):
    """Base class of every error infscope raises deliberately."""


class InputError(InfscopeError, ValueError):
    """Bad user input: an argument, a config value or data that cannot be used as given."""


class StoreError(InfscopeError):
    """A feature store cannot be used as asked (missing store, unknown checkpoint, ...)."""


class StoreMismatchError(StoreError):
    """An existing store was written with different settings (spec, ids, checkpoint info)."""


class StoreIncompleteError(StoreError):
    """A store is missing shards that a read needs; resume extraction to finish it."""


class StoreCorruptError(StoreError):
    """Store files are unreadable or inconsistent (bad metadata, truncated shard, bad checksum)."""


class ProvenanceError(StoreMismatchError):
    """Features that would be combined come from different model weights (or a trajectory's
    checkpoints share weights), so the result would be silently wrong."""


class NonFiniteError(InputError):
    """A loss, measurement or feature is NaN or infinite.

    ``positions`` are the offending examples' positions in the batch; ``ids`` their example ids when
    known (the extraction loop fills them in).
    """

    def __init__(
        self, message: str, positions: list[int] | None = None, ids: list[str] | None = None
    ):
        self.positions = list(positions or [])
        self.ids = list(ids or [])
        if self.ids:
            shown = ", ".join(map(str, self.ids[:5])) + (" ..." if len(self.ids) > 5 else "")
            message = f"{message}: example ids {shown}"
        super().__init__(message)


class InfscopeWarning(UserWarning):
    """Something the user should know that does not stop the run (a fallback taken, weights
    initialised on load, a slow configuration). The CLI prints each as one ``warning:`` line."""


class UserCodeError(InfscopeError):
    """A function the user named on the command line (``--train-fn``, a ``--model`` factory)
    raised. The message names the function's exception and the line of the user's code it came
    from; the original is chained (``__cause__``) for the full traceback. (Called from Python,
    the functions' own exceptions pass through unchanged.)"""
