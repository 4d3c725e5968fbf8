"""Is the audit's evidence strong enough to trust? Checks that turn into warnings.

An audit ranks every example whatever its inputs are: on constant or random features it still
flags about as many examples as the model gets wrong, which is most of them. These checks say when
the ranking is not worth reading:

* **no signal** — the combined class distribution predicts the given labels no better than
  always answering the most common class (one-sided binomial test at :data:`SIGNAL_LEVEL`);
* **constant features** — every row the same (e.g. all zeros), or rows of zeros: their
  neighbours are arbitrary;
* **too few examples per class** — a class with fewer than :data:`MIN_PER_CLASS` examples has
  too few others to be checked against (and K-fold training holds out a large share of them);
* **implausible error count** — confident learning estimates that at least half the labels are
  wrong: the model is more likely too weak than the labels that bad.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

#: Classes with fewer examples than this are too small to check.
MIN_PER_CLASS = 5
#: The significance level of the "better than the most common class" test.
SIGNAL_LEVEL = 0.01
#: An estimated error share from which the estimate says more about the model than the labels.
IMPLAUSIBLE_ERROR_SHARE = 0.5


@dataclass(frozen=True)
class EvidenceCheck:
    """The numbers behind the warnings: the accuracy of the combined distribution on the given
    labels against the most common class's share (``baseline``) and the binomial ``p_value`` of
    the difference; the mean log-likelihood gain over the class frequencies (nats per example);
    the smallest class size and the number of classes below :data:`MIN_PER_CLASS`; the share of
    labels estimated wrong; and whether the features are constant."""

    accuracy: float
    baseline: float
    p_value: float
    log_likelihood_gain: float
    smallest_class: int
    small_classes: int
    estimated_error_share: float
    constant_features: bool
    zero_feature_rows: int
    warnings: tuple[str, ...]

    @property
    def trustworthy(self) -> bool:
        return not self.warnings

    def to_dict(self) -> dict:
        out = asdict(self)
        out["warnings"] = list(self.warnings)
        return out


def check_evidence(
    probs: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    estimated_errors: int,
    features: np.ndarray | None = None,
    class_names: list[str] | None = None,
) -> EvidenceCheck:
    """Check an audit's combined class distribution ``probs`` ``[n, C]`` of the given ``labels``
    (and its ``features``, if any) for the weaknesses in the module docstring."""
    from scipy.stats import binom

    n = labels.size
    rows = np.arange(n)
    counts = np.bincount(labels, minlength=n_classes)
    present = counts[counts > 0]
    frequency = counts / n
    accuracy = float((probs.argmax(1) == labels).mean())
    baseline = float(frequency.max())
    hits = int(round(accuracy * n))
    p_value = float(binom.sf(hits - 1, n, baseline))
    gain = float(
        np.mean(np.log(np.maximum(probs[rows, labels], 1e-12)) - np.log(frequency[labels]))
    )
    error_share = estimated_errors / n
    constant = False
    zero_rows = 0
    if features is not None:
        x = np.asarray(features, dtype=np.float64)
        constant = bool(np.ptp(x, axis=0).max(initial=0.0) <= 1e-12 * max(np.abs(x).max(), 1.0))
        zero_rows = int((np.abs(x).max(1) == 0).sum())

    def name(k: int) -> str:
        return class_names[k] if class_names is not None else str(k)

    warnings: list[str] = []
    if p_value > SIGNAL_LEVEL:
        warnings.append(
            f"weak evidence: the model's out-of-sample predictions match the given labels "
            f"{accuracy:.1%} of the time, against {baseline:.1%} for always answering the most "
            f"common class (p = {p_value:.2g}), and gain {gain:+.3f} nats per example over the "
            f"class frequencies: the suspicions are close to guesses (uninformative features or "
            f"model)"
        )
    if constant:
        warnings.append(
            "the features are the same for every example (e.g. all zeros): they carry no "
            "information about the labels"
        )
    elif zero_rows:
        warnings.append(
            f"{zero_rows} example(s) have all-zero features: their neighbours are arbitrary"
        )
    small = np.flatnonzero((counts > 0) & (counts < MIN_PER_CLASS))
    if small.size:
        shown = ", ".join(f"{name(k)!r} ({counts[k]})" for k in small[:5])
        warnings.append(
            f"too few examples per class: {small.size} of {present.size} classes have fewer "
            f"than {MIN_PER_CLASS} ({shown}{', ...' if small.size > 5 else ''}); their members "
            f"are checked against too few others to trust their suspicion"
        )
    if error_share >= IMPLAUSIBLE_ERROR_SHARE:
        warnings.append(
            f"confident learning estimates that {error_share:.0%} of the labels are wrong: more "
            f"likely the model is too weak than the labels that bad"
        )
    return EvidenceCheck(
        accuracy=accuracy,
        baseline=baseline,
        p_value=p_value,
        log_likelihood_gain=gain,
        smallest_class=int(present.min()),
        small_classes=int(small.size),
        estimated_error_share=float(error_share),
        constant_features=constant,
        zero_feature_rows=zero_rows,
        warnings=tuple(warnings),
    )
