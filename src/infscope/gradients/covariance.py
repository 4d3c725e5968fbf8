"""Kronecker-factor statistics of the training loss, gathered in the pass that extracts features.

K-FAC and EK-FAC need, per tracked module, the second moments of its (projected) input
activations ``A = Σ a aᵀ`` and output gradients ``S = Σ g gᵀ`` over the positions the loss sees.
Both come from the same captured ``(a, g)`` that the projector turns into features, so
:func:`~infscope.gradients.featurize.featurize` can collect them while it writes the training
store (``covariances=``), and :func:`accumulate` does a pass of its own when no store is being
extracted. The eigendecompositions and everything read back from a store live with the
estimator (:class:`~infscope.attribution.kfac.KFACFactors`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from infscope.data import ExampleSet
from infscope.errors import InputError, NonFiniteError
from infscope.gradients.extractor import GradientExtractor, model_fingerprint
from infscope.gradients.projection import IdentityProjector, KroneckerProjector

UNSUPPORTED = (
    "K-FAC/EK-FAC needs features that keep modules apart (per-module blocks): extract them with "
    "ProjectionConfig(kind='kronecker', ...) or kind='identity'; dense (gaussian, rademacher) and "
    "sjlt projections mix all modules and are not supported"
)


class KroneckerCovariances:
    """Running sums of ``a aᵀ`` and ``g gᵀ`` per Kronecker module (positions with a non-zero
    output gradient only: padding and positions the loss never sees carry no gradient), their
    token counts, and — with ``features=True`` — the per-block sums of squared features and the
    ``ΦᵀΦ`` of non-Kronecker blocks (LayerNorm), for factors fitted without a store.

    Feed it every training example exactly once, through :meth:`update`.
    """

    def __init__(self, extractor: GradientExtractor, features: bool = False) -> None:
        projector = extractor.projector
        if not isinstance(projector, (KroneckerProjector, IdentityProjector)):
            raise InputError(f"{UNSUPPORTED} (the extractor uses {extractor.projection.kind!r})")
        self.extractor = extractor
        self.features = features
        self.layout = projector.blocks_layout()
        self.fingerprint = model_fingerprint(extractor.model)
        self.n_examples = 0
        self.tokens = [0] * len(self.layout)
        self.sums_a: list[torch.Tensor | None] = [None] * len(self.layout)
        self.sums_s: list[torch.Tensor | None] = [None] * len(self.layout)
        self.traces = np.zeros(len(self.layout))
        self.dense = {
            i: np.zeros((rows * cols, rows * cols))
            for i, (rows, cols, kronecker) in enumerate(self._shapes())
            if not kronecker
        }

    def _shapes(self) -> list[tuple[int, int, bool]]:
        return [(int(b["shape"][0]), int(b["shape"][1]), bool(b["kronecker"])) for b in self.layout]

    def update(
        self, captured: Sequence[tuple[torch.Tensor, torch.Tensor]], rows: np.ndarray | None = None
    ) -> None:
        """Add one batch: the extractor's captured ``(a, g)`` per module and, when collecting
        feature statistics, the batch's projected features ``rows``."""
        extractor = self.extractor
        projector = extractor.projector
        kronecker = isinstance(projector, KroneckerProjector)
        with torch.no_grad():
            for index, (module, (a, g)) in enumerate(zip(extractor.modules, captured)):
                n_rows, n_cols, is_kronecker = self._shapes()[index]
                if not is_kronecker:
                    continue
                device = g.device if g.device.type == "cuda" else torch.device("cpu")
                active = (g != 0).any(dim=-1)  # [B, T]
                if kronecker:
                    p_in, p_out = projector.matrices(index, g.device)
                    a = module.project_inputs(a, p_in.to(g.dtype))
                    g = g @ p_out.to(g.dtype).T
                elif not a.is_floating_point():  # embedding ids: one-hot inputs
                    a = torch.nn.functional.one_hot(a, module.n_cols).to(g.dtype)
                a = a[active].to(device, torch.float64)
                g = g[active].to(device, torch.float64)
                if self.sums_a[index] is None:
                    self.sums_a[index] = a.new_zeros(n_cols, n_cols)
                    self.sums_s[index] = g.new_zeros(n_rows, n_rows)
                self.sums_a[index] += a.T @ a
                self.sums_s[index] += g.T @ g
                self.tokens[index] += int(active.sum())
            batch = int(captured[0][1].shape[0]) if captured else 0
        if self.features:
            if rows is None:
                raise InputError("feature statistics need the batch's projected features")
            rows = np.asarray(rows, dtype=np.float64)
            start = 0
            for index, (n_rows, n_cols, is_kronecker) in enumerate(self._shapes()):
                x = rows[:, start : start + n_rows * n_cols]
                start += n_rows * n_cols
                self.traces[index] += np.einsum("ij,ij->", x, x)
                if not is_kronecker:
                    self.dense[index] += x.T @ x
            batch = len(rows)
        self.n_examples += batch

    def covariance(self, index: int, side: str) -> np.ndarray:
        """``A`` (``side="inputs"``) or ``S`` (``"outputs"``) of Kronecker module ``index``:
        the mean over the positions that entered it."""
        sums = self.sums_a if side == "inputs" else self.sums_s
        if sums[index] is None:
            n_rows, n_cols, _ = self._shapes()[index]
            size = n_cols if side == "inputs" else n_rows
            return np.zeros((size, size))
        return sums[index].cpu().numpy() / max(self.tokens[index], 1)


def accumulate(
    extractor: GradientExtractor,
    data: ExampleSet,
    batch_size: int = 32,
    progress: bool = True,
    features: bool = False,
) -> KroneckerCovariances:
    """One pass of training-loss gradients over ``data`` into a :class:`KroneckerCovariances`."""
    if batch_size < 1:
        raise InputError(f"batch_size must be positive, got {batch_size}")
    covariances = KroneckerCovariances(extractor, features)
    n = len(data)
    with tqdm(total=n, desc="kfac factors", unit="ex", disable=not progress) as bar:
        for first in range(0, n, batch_size):
            last = min(first + batch_size, n)
            try:
                batch = extractor.task.collate([data[i] for i in range(first, last)])
                captured, _ = extractor.factors(batch, "loss")
            except NonFiniteError as err:
                ids = [data.ids[first + p] for p in err.positions]
                raise NonFiniteError(str(err), [first + p for p in err.positions], ids) from None
            rows = None
            if features:
                with torch.no_grad():
                    rows = extractor.projector.project(captured).detach().cpu().numpy()
            covariances.update(captured, rows)
            bar.update(last - first)
    return covariances
