"""The dimensionality of a representation change (analysis/robustness/dimensionality.py):
participation ratio and components for a variance fraction on changes of known spectrum, the
Gram shortcut against the covariance, and the bounded sample of changes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from vestige.analysis.robustness import dimensionality
from vestige.analysis.robustness.dimensionality import (
    ChangeSample,
    components_for_variance,
    participation_ratio,
    variance_spectrum,
)


def orthonormal(dimensions: int, rank: int, seed: int = 0) -> Tensor:
    """`rank` orthonormal vectors of a random subspace of R^dimensions, as rows."""
    gaussian = torch.randn(dimensions, rank, generator=torch.Generator().manual_seed(seed))
    return torch.linalg.qr(gaussian.double()).Q.T


def changes_of_spectrum(
    variances: list[float], dimensions: int, repeats: int = 1, seed: int = 0
) -> Tensor:
    """Rows +-sqrt(v_i) u_i (each `repeats` times) plus one shared offset: centred, their
    covariance has exactly the eigenvalues proportional to `variances`, along random u_i."""
    basis = orthonormal(dimensions, len(variances), seed)
    scaled = basis * torch.tensor(variances, dtype=torch.float64).sqrt()[:, None]
    offset = torch.linspace(-1, 1, dimensions, dtype=torch.float64)
    return torch.cat([scaled, -scaled] * repeats) + offset


@pytest.mark.parametrize(("dimensions", "repeats"), [(64, 1), (8, 4)], ids=["D>N", "D<N"])
def test_participation_ratio_of_an_isotropic_change_is_its_rank(
    dimensions: int, repeats: int
) -> None:
    changes = changes_of_spectrum([2.5] * 5, dimensions, repeats)
    assert (len(changes) < dimensions) == (repeats == 1)
    assert participation_ratio(changes) == pytest.approx(5, abs=1e-6)
    assert participation_ratio(changes.float()) == pytest.approx(5, abs=1e-4)
    assert participation_ratio(changes[:2]) == pytest.approx(1, abs=1e-6)


@pytest.mark.parametrize(("samples", "dimensions"), [(300, 5000), (3000, 40)], ids=["D>N", "D<N"])
def test_participation_ratio_of_a_gaussian_sample_approaches_its_rank(
    samples: int, dimensions: int
) -> None:
    """A finite sample's covariance spreads its eigenvalues, so the ratio falls short by about
    rank / samples of itself."""
    basis = orthonormal(dimensions, 10).float()
    coefficients = torch.randn(samples, 10, generator=torch.Generator().manual_seed(1))
    ratio = participation_ratio(coefficients @ basis)
    assert 10 * (1 - 3 * 10 / samples) < ratio < 10


def test_gram_matrix_gives_the_covariance_eigenvalues(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dimensionality, "GRAM_COLUMNS", 7)  # many blocks of columns
    rows = torch.randn(20, 50, generator=torch.Generator().manual_seed(2)).double()
    centred = rows - rows.mean(0)
    covariance = torch.linalg.eigvalsh(centred.T @ centred).flip(0)
    spectrum = variance_spectrum(rows.view(20, 2, 5, 5))
    assert spectrum.shape == (20,) and spectrum.dtype == torch.float64
    torch.testing.assert_close(spectrum[:19], covariance[:19])
    assert spectrum[19] < 1e-10 * spectrum[0]  # 20 centred rows span 19 dimensions


def test_components_for_variance_of_a_known_spectrum() -> None:
    """Variances 8, 4, 2, 1, 1 explain 1/2, 3/4, 7/8, 15/16 and all of the total."""
    changes = changes_of_spectrum([8.0, 4.0, 2.0, 1.0, 1.0], dimensions=40)
    expected = {0.4: 1, 0.5: 1, 0.6: 2, 0.75: 2, 0.8: 3, 0.875: 3, 0.9: 4, 0.95: 5, 1.0: 5}
    for fraction, count in expected.items():
        assert components_for_variance(changes, fraction) == count, fraction
    assert participation_ratio(changes) == pytest.approx(16**2 / 86, rel=1e-9)


def test_components_of_an_isotropic_change_at_the_exact_fraction() -> None:
    """Ten equal variances: 90% is reached at exactly 9 components, whatever the rounding."""
    changes = changes_of_spectrum([1.0] * 10, dimensions=30, repeats=3)
    assert components_for_variance(changes, 0.9) == 9
    assert components_for_variance(changes, 0.91) == 10


def test_one_spectrum_serves_both_measures() -> None:
    changes = changes_of_spectrum([3.0, 2.0, 1.0], dimensions=12)
    spectrum = variance_spectrum(changes)
    assert participation_ratio(spectrum) == participation_ratio(changes)
    assert components_for_variance(spectrum, 0.6) == components_for_variance(changes, 0.6) == 2


def test_no_change_has_no_dimension() -> None:
    unchanged = torch.ones(6, 100)
    assert participation_ratio(unchanged) == 0.0
    assert components_for_variance(unchanged) == 0


def test_change_sample_keeps_the_first_images_up_to_its_limit() -> None:
    sample = ChangeSample(limit=10)
    clean = torch.arange(16 * 2 * 3.0).view(16, 2, 3)
    perturbed = clean * 1.5
    for start in range(0, 16, 4):
        sample.add(clean[start : start + 4], perturbed[start : start + 4])
        assert len(sample) == min(start + 4, 10)
    assert sample.full
    kept = sample.changes()
    assert kept.shape == (10, 6)
    assert torch.equal(kept, (perturbed - clean)[:10].flatten(1))
    perturbed.zero_()
    assert torch.equal(sample.changes(), kept)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ChangeSample(1), "limit=1"),
        (lambda: participation_ratio(torch.ones(1, 5)), "1 rows"),
        (lambda: components_for_variance(torch.randn(4, 5), 0.0), "fraction=0.0"),
        (lambda: components_for_variance(torch.randn(4, 5), 1.5), "fraction=1.5"),
    ],
)
def test_bad_arguments_are_refused_with_the_fix(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_participation_ratio_of_a_change_as_wide_as_a_stage_output() -> None:
    """A large D (as a stage's block output) through the Gram path: a rank-3 isotropic change."""
    changes = changes_of_spectrum([1.0] * 3, dimensions=65_536, repeats=2, seed=4).float()
    assert math.isclose(participation_ratio(changes), 3, abs_tol=1e-4)
