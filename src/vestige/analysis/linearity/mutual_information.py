"""Plug-in information between label columns, and Kalimeris et al.'s performance correlation
(docs/science.md §5).

All quantities are in **bits**, estimated from the empirical counts of the labels over the
evaluation images (plug-in estimates: no bias correction, so with few images per cell they lean
upwards).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def entropy(*labels: np.ndarray) -> float:
    """H(A, B, ...) in bits: the plug-in entropy of the joint of one or more label columns."""
    _, counts = np.unique(np.stack(labels), axis=1, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """I(A;B) = H(A) + H(B) - H(A,B)."""
    return entropy(a) + entropy(b) - entropy(a, b)


def conditional_mutual_information(a: np.ndarray, b: np.ndarray, given: np.ndarray) -> float:
    """I(A;B|Y) = H(A,Y) + H(B,Y) - H(A,B,Y) - H(Y)."""
    return entropy(a, given) + entropy(b, given) - entropy(a, b, given) - entropy(given)


@dataclass
class PerformanceCorrelation:
    """mu_Y(F;L) = I(F;L) - I(F;L|Y) (Kalimeris et al. 2019) and its parts, in bits.

    F: the network's predicted labels, L: the linear classifier's, Y: the true labels.
    mu is the information F and L share *about Y*: 0 when they are independent, I(F;Y) when
    L = F. It is the part of the network's performance a linear classifier explains.
    """

    mu: float
    i_fl: float  # I(F;L)
    i_fl_given_y: float  # I(F;L|Y)
    i_fy: float  # I(F;Y): the network's own information about the labels, mu's ceiling for L = F
    i_ly: float  # I(L;Y)


def performance_correlation(
    network: np.ndarray, linear: np.ndarray, labels: np.ndarray
) -> PerformanceCorrelation:
    """mu_Y(F;L) from the predicted labels of both models and the true labels, one per image."""
    i_fl = mutual_information(network, linear)
    i_fl_given_y = conditional_mutual_information(network, linear, labels)
    return PerformanceCorrelation(
        mu=i_fl - i_fl_given_y,
        i_fl=i_fl,
        i_fl_given_y=i_fl_given_y,
        i_fy=mutual_information(network, labels),
        i_ly=mutual_information(linear, labels),
    )
