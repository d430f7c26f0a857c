"""The dimensionality of the representation change a perturbation causes: Leavitt & Morcos'
robustness paper (../shared/reference/class-selectivity.md §7) finds it higher in networks of
lower class selectivity, whose units share the work of each class.

The change of one image is the difference between a stage's block outputs on its perturbed and
its clean version, flattened. Over a sample of N images these rows span some subspace of the
D-dimensional representation; its effective dimension is read from the eigenvalues of the
covariance of the centred rows, two ways: the participation ratio (sum λ)^2 / sum λ^2 (k for
variance spread evenly over k directions, 1 for a single direction) and the number of principal
components that explain a fraction of the variance.
"""

from __future__ import annotations

import torch
from torch import Tensor

GRAM_COLUMNS = 4096  # columns of the centred rows turned to float64 at a time
TIE = 1e-9  # relative: a variance fraction reached to within rounding counts as reached


class ChangeSample:
    """The representation changes of the first `limit` images offered, as N x D rows.

    The first images rather than a random reservoir: with an unshuffled eval loader they are
    the same images at every snapshot, so snapshots are compared on one sample, and nothing is
    drawn. Once `full`, the caller can stop computing changes; only the kept rows are held
    (copied, so no batch is kept alive by a view into it).
    """

    def __init__(self, limit: int) -> None:
        if limit < 2:
            raise ValueError(f"limit={limit!r} is invalid: keep at least 2 images to centre")
        self.limit = limit
        self._rows: list[Tensor] = []
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def full(self) -> bool:
        return self._count >= self.limit

    def add(self, clean: Tensor, perturbed: Tensor) -> None:
        """Keep perturbed - clean of as many of these images as the sample still takes."""
        take = min(self.limit - self._count, len(clean))
        if take > 0:
            change = perturbed[:take].detach() - clean[:take].detach()
            self._rows.append(change.flatten(1))
            self._count += take

    def changes(self) -> Tensor:
        """The kept rows, N x D, in the order they were offered."""
        return torch.cat(self._rows)


def variance_spectrum(changes: Tensor) -> Tensor:
    """Eigenvalues of the (unnormalised) covariance of the centred rows, float64, descending.

    When D > N the N x N Gram matrix of the centred rows has the same non-zero eigenvalues as
    the D x D covariance and is far smaller; it is accumulated a block of columns at a time, so
    no float64 copy of all N x D values is made.
    """
    rows = changes.flatten(1)
    if len(rows) < 2:
        raise ValueError(f"{len(rows)} rows are invalid: need 2 or more changes to centre")
    if rows.shape[1] > len(rows):
        gram = torch.zeros(len(rows), len(rows), dtype=torch.float64, device=rows.device)
        for block in rows.split(GRAM_COLUMNS, dim=1):
            centred = _centred(block)
            gram += centred @ centred.T
    else:
        centred = _centred(rows)
        gram = centred.T @ centred
    return torch.linalg.eigvalsh(gram).flip(0).clamp_min(0)


def participation_ratio(changes: Tensor) -> float:
    """(sum λ)^2 / sum λ^2 of the covariance eigenvalues of `changes` (N x ... rows) or of their
    `variance_spectrum` (1-D, to reuse one eigendecomposition). 0 when nothing changed."""
    spectrum = _spectrum(changes)
    squares = float((spectrum**2).sum())
    return float(spectrum.sum()) ** 2 / squares if squares > 0 else 0.0


def components_for_variance(changes: Tensor, fraction: float = 0.9) -> int:
    """The fewest principal components of `changes` (rows, or their 1-D `variance_spectrum`)
    that explain `fraction` of the variance. 0 when nothing changed."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction={fraction!r} is invalid: use a fraction in (0, 1]")
    spectrum = _spectrum(changes)
    total = float(spectrum.sum())
    if total == 0:
        return 0
    short = spectrum.cumsum(0) < (fraction - TIE) * total
    return int(short.sum()) + 1


def _centred(rows: Tensor) -> Tensor:
    rows = rows.double()
    return rows - rows.mean(0)


def _spectrum(changes: Tensor) -> Tensor:
    return changes if changes.dim() == 1 else variance_spectrum(changes)
