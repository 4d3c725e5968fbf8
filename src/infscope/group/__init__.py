"""Group influence: the effect of removing a set of training examples together on test losses.

:func:`group_influence` predicts, per group, the change of every test loss by the sum of the
individual influences, by the Newton step on the remaining data (the unlearning step of
:mod:`infscope.unlearning`, read as an influence estimate) and by Basu et al.'s second-order
expansion; :func:`query_losses` measures the same losses on a (retrained) model. This package sits
above :mod:`infscope.unlearning` and :mod:`infscope.attribution` (it imports both).
"""

from infscope.group.influence import (
    METHODS,
    GroupConfig,
    GroupInfluence,
    group_influence,
    query_losses,
)

__all__ = ["METHODS", "GroupConfig", "GroupInfluence", "group_influence", "query_losses"]
