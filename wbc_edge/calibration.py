"""Confidence that means what it says: temperature scaling and a certified counting threshold.

Both are fitted on labelled cells the model never trained on, never on test: the validation
split at the end of training, or a separate calibration set (``wbc-edge calibrate --calib``;
the packaged student's is ``pbc9-extra``, 1,692 PBC crops outside its split), and stored in the
model card (``temperature``, ``confidence_threshold``, ``calibration``), which every backend and
the exported ONNX graph apply. numpy only: the trainer, ``wbc-edge calibrate`` and ``evaluate`` all
use these functions, and the runtime could.

Temperature scaling (Guo et al. 2017) divides the logits by one scalar T > 0 chosen to minimise
the validation negative log-likelihood. It never changes a prediction (argmax of z / T is the
argmax of z). The NLL is convex in 1/T, hence unimodal in log T, so a golden-section search over
log T finds the global minimum without scipy.

The threshold rule is documented on :func:`certify_threshold`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

DEFAULT_TARGET_ERROR = 0.01  # error allowed among counted cells
DEFAULT_DELTA = 0.1  # chance, over the validation draw, that the certificate is wrong
TEMPERATURE_RANGE = (0.05, 20.0)


def log_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def nll(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true classes under softmax(logits / T)."""
    y = np.asarray(y, np.int64)
    return float(-log_softmax(logits, temperature)[np.arange(len(y)), y].mean())


def logits_from_probs(probs: np.ndarray) -> np.ndarray:
    """Log-probabilities: logits up to a per-row constant, which softmax ignores.

    So a temperature can be fitted from any backend's probabilities; when the model already has
    a temperature T0, the fitted T multiplies it (softmax(z / T0 / T) = softmax(z / (T0 T))).
    """
    return np.log(np.clip(np.asarray(probs, np.float64), 1e-300, None))


def fit_temperature(
    logits: np.ndarray, y: np.ndarray, bounds: tuple[float, float] = TEMPERATURE_RANGE
) -> float:
    """The T in ``bounds`` that minimises the NLL of softmax(logits / T) (golden section on
    log T, to 1e-4 relative)."""
    if len(y) == 0:
        raise ValueError("fit_temperature needs at least one labelled sample")
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(logits, y, math.exp(a)), nll(logits, y, math.exp(b))
    while hi - lo > 1e-4:
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(logits, y, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(logits, y, math.exp(b))
    return float(math.exp((lo + hi) / 2))


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(Binomial(n, p) <= k), summed in log space (exact for the small k used here)."""
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    lp, lq = math.log(p), math.log1p(-p)
    terms = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
        for i in range(k + 1)
    ]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def binomial_upper_bound(k: int, n: int, delta: float) -> float:
    """One-sided (1 - delta) Clopper-Pearson upper bound on an error rate seen as k of n."""
    if n == 0:
        return 1.0
    lo, hi = k / n, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if binomial_cdf(k, n, mid) > delta:
            lo = mid
        else:
            hi = mid
    return hi


def min_certifiable(target_error: float, delta: float, errors: int = 0) -> int:
    """Fewest counted cells that can certify ``target_error`` with ``errors`` wrong among them:
    the smallest n with P(Binomial(n, target_error) <= errors) <= delta (with no error,
    (1 - target_error)^n <= delta: 230 at 1% and delta 0.1)."""
    if errors == 0:
        return math.ceil(math.log(delta) / math.log1p(-target_error))
    lo, hi = min_certifiable(target_error, delta), min_certifiable(target_error, delta)
    while binomial_cdf(errors, hi, target_error) > delta:  # the cdf falls as n grows
        lo, hi = hi, 2 * hi
    while lo < hi:
        mid = (lo + hi) // 2
        if binomial_cdf(errors, mid, target_error) <= delta:
            hi = mid
        else:
            lo = mid + 1
    return hi


# The walk starts where the count first allows this many errors (667 cells at 1%, delta 0.1),
# or fewer when the calibration set is smaller. A stricter start tests thresholds where one
# confidently wrong cell decides everything (the packaged student's 230 most confident
# pbc9-extra cells hold one error, an immature granulocyte called Monocyte at 0.995), and
# stops the walk there; thresholds that count so few cells are of no use to a lab anyway.
START_ERRORS = 3


def walk_start(n_cells: int, target_error: float, delta: float) -> int:
    """The count at which the fixed-sequence walk starts (see :data:`START_ERRORS`): the
    largest ``min_certifiable(target, delta, k)`` for k <= START_ERRORS that ``n_cells``
    reaches; ``min_certifiable(target, delta)`` when it reaches none."""
    for k in range(START_ERRORS, 0, -1):
        n = min_certifiable(target_error, delta, k)
        if n <= n_cells:
            return n
    return min_certifiable(target_error, delta)


# A fixed, data-independent grid of thresholds, finer near 1 where calibrated confidences pile up.
THRESHOLD_GRID = np.unique(
    np.concatenate([np.linspace(0.0, 1.0, 1001), 1.0 - np.geomspace(1e-6, 1e-3, 61)])
)[::-1]


@dataclass
class Threshold:
    """A counting threshold and the validation evidence behind it."""

    threshold: float | None  # None: nothing could be certified on this validation set
    target_error: float
    delta: float
    rule: str
    n_val: int
    counted: int  # validation cells at or above the threshold
    errors: int  # wrong ones among them
    upper_bound: float  # (1 - delta) upper confidence bound on their error rate
    min_counted: int  # fewest counted cells that could certify target_error at all
    reason: str = ""

    @property
    def coverage(self) -> float:
        return self.counted / self.n_val if self.n_val else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "coverage": self.coverage}


def certify_threshold(
    confidence: np.ndarray,
    correct: np.ndarray,
    target_error: float = DEFAULT_TARGET_ERROR,
    delta: float = DEFAULT_DELTA,
) -> Threshold:
    """The lowest confidence threshold whose counted cells' error is certified <= target.

    **Rule** (Learn-then-Test, Angelopoulos et al. 2021, with fixed-sequence testing; the
    binomial test is the one of SGR, Geifman & El-Yaniv 2017). For each threshold l of a fixed,
    data-independent grid, H_l says "the error among cells with confidence >= l is above
    ``target_error``". Given the n_l calibration cells counted at l, their errors k_l are
    Binomial(n_l, R(l)), so p_l = P(Binomial(n_l, target) <= k_l) is a valid p-value for H_l
    (equivalently: the one-sided 1 - delta Clopper-Pearson bound on R(l) is <= target exactly
    when p_l <= delta). The grid is walked from strict to loose, testing each H_l at level
    ``delta`` and stopping at the first one that is not rejected; the answer is the last
    rejected threshold (the most cells counted). Walking a fixed sequence needs no multiplicity
    correction. The walk starts at the first threshold that counts :func:`walk_start` cells:
    where the count first allows :data:`START_ERRORS` errors (667 at 1% and delta 0.1), or
    fewer on a smaller set, never below :func:`min_certifiable` (230), under which no
    threshold can be rejected at all.

    **Guarantee**: with probability >= 1 - delta over the draw of the calibration cells (the
    validation split, or a calibration set such as pbc9-extra), the error of counted cells on
    new cells from the same distribution (exchangeable with them) is <= ``target_error``.
    Fixed-sequence testing gives this exactly for a data-independent start; our start depends
    on the calibration confidences through the count n_l only, and the argument carries over
    when the error among counted cells does not grow as the threshold rises (the premise of
    every confidence threshold, and of SGR's search).
    The certificate needs at least ``min_certifiable(target, delta)`` counted calibration cells
    without an error (230 at 1% and delta 0.1): a small or inaccurate calibration set certifies
    nothing, and then ``threshold`` is None and ``reason`` says why. The start at
    :data:`START_ERRORS` errors was chosen on synthetic draws (``tests/test_counted_right.py``:
    with 0.05% of cells confidently wrong at the top, a start at 230 certified a median of 6%
    of the cells, a start at 667 a third, violations 4-5% against delta 10%) and on pbc9-extra.
    The temperature is fitted on the same cells; one scalar, and it barely changes which cells
    rank above which, so we do not split the set for it.
    """
    confidence = np.asarray(confidence, np.float64)
    wrong = ~np.asarray(correct, bool)
    if not 0 < target_error < 1 or not 0 < delta < 1:
        raise ValueError("target_error and delta must lie strictly between 0 and 1")
    n_min = min_certifiable(target_error, delta)
    n_start = walk_start(len(confidence), target_error, delta)
    order = np.argsort(-confidence, kind="stable")
    conf_sorted, errors_cum = confidence[order], np.cumsum(wrong[order])
    best: tuple[float, int, int] | None = None
    started = False
    for lam in THRESHOLD_GRID:
        n = int(np.searchsorted(-conf_sorted, -lam, side="right"))  # count of conf >= lam
        if n < n_start:
            continue
        started = True
        k = int(errors_cum[n - 1])
        if binomial_cdf(k, n, target_error) > delta:
            break
        best = (float(lam), n, k)
    rule = (
        f"learn-then-test fixed sequence from {n_start} counted, binomial p-values, target "
        f"{target_error:g}, delta {delta:g}"
    )
    common = dict(
        target_error=target_error, delta=delta, rule=rule, n_val=len(confidence), min_counted=n_min
    )
    if best is None:
        if not started:
            reason = (
                f"only {len(confidence)} calibration cells: certifying {target_error:.1%} needs "
                f"at least {n_min} counted cells"
            )
        else:
            reason = (
                f"no threshold counts {n_start}+ calibration cells with few enough errors "
                f"for {target_error:.1%} at delta {delta:g}"
            )
        total_err = int(wrong.sum())
        return Threshold(
            None,
            counted=len(confidence),
            errors=total_err,
            upper_bound=binomial_upper_bound(total_err, len(confidence), delta),
            reason=reason,
            **common,
        )
    lam, n, k = best
    return Threshold(
        lam, counted=n, errors=k, upper_bound=binomial_upper_bound(k, n, delta), **common
    )


@dataclass
class Selective:
    """How a threshold splits a labelled set: share counted and the error among those."""

    threshold: float | None
    coverage: float
    counted: int
    errors: int

    @property
    def error(self) -> float:
        return self.errors / self.counted if self.counted else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "error": self.error}


def selective(probs: np.ndarray, y: np.ndarray, threshold: float | None) -> Selective:
    """Coverage and error of counted cells (top probability >= threshold; None counts all)."""
    probs = np.asarray(probs)
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    keep = np.ones(len(conf), bool) if threshold is None else conf >= threshold
    n = int(keep.sum())
    errors = int((pred[keep] != np.asarray(y)[keep]).sum())
    return Selective(threshold, n / len(conf) if len(conf) else 0.0, n, errors)


@dataclass
class Calibration:
    """Everything fitted on validation, ready for the card."""

    temperature: float  # the model's new total temperature (replaces the card's value)
    threshold: Threshold
    val_nll_before: float
    val_nll_after: float
    fitted_on: str = "val"  # what the cells were: "val", or the calibration set's name

    def card_fields(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "confidence_threshold": self.threshold.threshold,
            "calibration": {
                "fitted_on": self.fitted_on,
                "val_nll_before": self.val_nll_before,
                "val_nll_after": self.val_nll_after,
                **self.threshold.to_dict(),
            },
        }


def calibrate(
    val_probs: np.ndarray,
    val_y: np.ndarray,
    current_temperature: float = 1.0,
    target_error: float = DEFAULT_TARGET_ERROR,
    delta: float = DEFAULT_DELTA,
) -> Calibration:
    """Fit T on validation probabilities made at ``current_temperature``, then certify a
    threshold on the recalibrated probabilities. Returns the model's new total temperature."""
    z = logits_from_probs(val_probs)
    t = fit_temperature(z, val_y)
    calibrated = np.exp(log_softmax(z, t))
    thr = certify_threshold(
        calibrated.max(axis=1), calibrated.argmax(axis=1) == np.asarray(val_y), target_error, delta
    )
    return Calibration(current_temperature * t, thr, nll(z, val_y), nll(z, val_y, t))


def rescale(probs: np.ndarray, factor: float) -> np.ndarray:
    """Probabilities made at temperature T0, recomputed at T0 * factor."""
    return np.exp(log_softmax(logits_from_probs(probs), factor))


def certificate_text(cal: dict[str, Any] | None) -> str:
    """A card's counted-cell certificate (``card.calibration``) in words, for ``info`` and the
    report ("" when the card has none; ``info --json`` has every field)."""
    if not cal:
        return ""
    if "target_error" not in cal:
        return json.dumps(cal, sort_keys=True)
    head = f"target {cal['target_error']:.1%} error of counted cells at delta {cal.get('delta')}"
    if cal.get("threshold") is None:
        return f"{head}: {cal.get('reason', 'not certified')}"
    where = cal.get("fitted_on", "val")
    where = "val" if where == "val" else f"calibration ({where})"
    return (
        f"{head}: threshold {cal['threshold']:g}, {cal.get('counted')} of {cal.get('n_val')} "
        f"{where} cells counted, {cal.get('errors')} errors ({cal.get('rule', '')})"
    )
