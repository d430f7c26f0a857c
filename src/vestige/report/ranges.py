"""The values each quantity a figure shows can take, in one place: a band of mean +- 2 SE is
clipped to them, so it never claims an accuracy below 0 or a loss below 0."""

from __future__ import annotations

import math

import numpy as np

PROPORTION = (0.0, 1.0)
NON_NEGATIVE = (0.0, math.inf)
UNBOUNDED = (-math.inf, math.inf)

VALID_RANGE: dict[str, tuple[float, float]] = {
    "eval_acc": PROPORTION,  # top-1 share of the evaluation split (train/evaluate.py)
    "eval_loss": NON_NEGATIVE,  # cross-entropy (train/evaluate.py)
    "train_loss": NON_NEGATIVE,  # the cross-entropy alone, without regularizers (train/loop.py)
    # selectivity/index.py; in [0, 1] for non-negative activations: GELU units measured with
    # selectivity.negative=keep can leave it, and then their band is clipped at the mean
    "si": PROPORTION,
    "top1_norm": NON_NEGATIVE,  # accuracy / unablated accuracy (analysis/ablation/plan.py)
    "auc_top1": NON_NEGATIVE,  # area under top1_norm over k/C (analysis/ablation/)
    "agreement": PROPORTION,  # share of images (analysis/linearity/probes.py)
    "relative_error": NON_NEGATIVE,  # a ratio of norms (analysis/linearity/probes.py)
    "acc_linearized": PROPORTION,  # top-1 share (analysis/linearity/)
    "flip_fraction": PROPORTION,  # share of ReLU states (analysis/linearity/probes.py)
    "gate": PROPORTION,  # sigmoid of a ConViT gate (analysis/attention.py)
    "nonlocality": NON_NEGATIVE,  # a distance in patches (analysis/attention.py)
    # top-1 shares of clean, corrupted and attacked images (analysis/robustness/)
    "clean_accuracy": PROPORTION,
    "mean_corruption_accuracy": PROPORTION,
    "accuracy": PROPORTION,  # adversarial.csv: under one attack at one radius
    # an effective number of dimensions (analysis/robustness/dimensionality.py)
    "participation_ratio": NON_NEGATIVE,
    # mu = I(F;L) - I(F;L|Y) is a difference of informations and may be negative: unbounded
}


def valid_range(quantity: str) -> tuple[float, float]:
    """The quantity's (low, high); unbounded for a quantity not listed."""
    return VALID_RANGE.get(quantity, UNBOUNDED)


def band_edges(
    mean: np.ndarray, spread: np.ndarray, quantity: str
) -> tuple[np.ndarray, np.ndarray]:
    """mean - spread and mean + spread, clipped to the quantity's range but never past the mean
    (a mean outside the range keeps its line inside its own band); NaN spread: no band there."""
    low, high = valid_range(quantity)
    mean, spread = np.asarray(mean, dtype=float), np.asarray(spread, dtype=float)
    lower = np.maximum(mean - spread, np.minimum(mean, low))
    upper = np.minimum(mean + spread, np.maximum(mean, high))
    return lower, upper
