"""The CIFAR-10-C corruptions (vestige.analysis.robustness.corruptions): deterministic per image,
independent of the batch, visible at every severity, worse with severity, in range."""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import pytest
import torch
import torch.nn.functional as F
from conftest import FASHION_MNIST_ROOT
from torch import Tensor

from vestige.analysis.robustness.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from vestige.data.idx import read_fashion_mnist

# the corruptions that draw random numbers; the others ignore the seeds
RANDOM = {
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "glass_blur",
    "motion_blur",
    "snow",
    "frost",
    "fog",
    "elastic_transform",
}
MONOTONE = [name for name in CORRUPTIONS if name != "glass_blur"]  # glass_blur: its own test


def smooth_rgb(count: int, size: int = 32) -> Tensor:
    """Random RGB images with structure at a few pixels' scale, like small photographs."""
    coarse = torch.rand(count, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    return F.interpolate(coarse, size=size, mode="bicubic", align_corners=False).clamp(0, 1)


@pytest.fixture(scope="module")
def fashion_mnist() -> Tensor:
    if not FASHION_MNIST_ROOT.is_dir():
        pytest.skip(f"{FASHION_MNIST_ROOT} absent (Debian's Fashion-MNIST is not installed)")
    images, _ = read_fashion_mnist(FASHION_MNIST_ROOT, train=False)
    return images[:6].float() / 255


@pytest.fixture(params=["fashion_mnist", "smooth_rgb"])
def clean(request: pytest.FixtureRequest) -> Tensor:
    """Realistic batches: real grey 28 px Fashion-MNIST test images, smooth RGB 32 px images."""
    if request.param == "fashion_mnist":
        return request.getfixturevalue("fashion_mnist")
    return smooth_rgb(6)


def seeds_for(images: Tensor, first: int = 0) -> Tensor:
    return torch.arange(first, first + len(images))


def test_the_names_are_cifar_10_c_s_fifteen_in_the_papers_order() -> None:
    noise = ("gaussian_noise", "shot_noise", "impulse_noise")
    blur = ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur")
    weather = ("snow", "frost", "fog")
    digital = ("brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression")
    assert CORRUPTIONS == noise + blur + weather + digital
    assert SEVERITIES == (1, 2, 3, 4, 5)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_the_same_seeds_give_the_same_corruption(name: str) -> None:
    images = smooth_rgb(3)
    first = corrupt(images, name, 3, seeds_for(images))
    assert torch.equal(first, corrupt(images, name, 3, seeds_for(images)))


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_another_seed_changes_every_image_of_a_random_corruption_only(name: str) -> None:
    images = smooth_rgb(3)
    first = corrupt(images, name, 3, seeds_for(images))
    other = corrupt(images, name, 3, seeds_for(images, first=100))
    changed = [not torch.equal(a, b) for a, b in zip(first, other, strict=True)]
    assert changed == [name in RANDOM] * len(images)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_an_image_is_corrupted_alike_alone_and_in_any_batch(name: str) -> None:
    images, seeds = smooth_rgb(4), torch.tensor([7, 8, 9, 10])
    together = corrupt(images, name, 4, seeds)
    reversed_batch = corrupt(images.flip(0), name, 4, seeds.flip(0)).flip(0)
    torch.testing.assert_close(reversed_batch, together, atol=1e-6, rtol=0)
    for i in range(len(images)):
        alone = corrupt(images[i : i + 1], name, 4, seeds[i : i + 1])
        torch.testing.assert_close(alone[0], together[i], atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_every_severity_visibly_changes_every_image(name: str, clean: Tensor) -> None:
    for severity in SEVERITIES:
        corrupted = corrupt(clean, name, severity, seeds_for(clean))
        largest_change = (corrupted - clean).abs().amax(dim=(1, 2, 3))
        assert (largest_change > 1 / 255).all(), (severity, largest_change)


def mean_squared_difference(corrupted: Tensor, clean: Tensor) -> float:
    return ((corrupted - clean) ** 2).mean().item()


def uncorrelated_share(corrupted: Tensor, clean: Tensor) -> float:
    """1 - the correlation of each corrupted image with its clean one, averaged."""
    a = corrupted.flatten(1) - corrupted.flatten(1).mean(dim=1, keepdim=True)
    b = clean.flatten(1) - clean.flatten(1).mean(dim=1, keepdim=True)
    return 1 - ((a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1))).mean().item()


def repeated_lines(corrupted: Tensor, clean: Tensor) -> float:
    """The share of rows and columns equal to the one before: how coarse the pixel grid is."""
    rows = (corrupted[..., 1:, :] == corrupted[..., :-1, :]).all(dim=-1).float().mean()
    cols = (corrupted[..., 1:] == corrupted[..., :-1]).all(dim=-2).float().mean()
    return (rows + cols).item() / 2


def ramps(like: Tensor) -> Tensor:
    """Linear intensity ramps in random directions, the shape of `like`, within [0.2, 0.8]."""
    count, channels, height, width = like.shape
    angle = torch.rand(count, 1, 1, generator=torch.Generator().manual_seed(1)) * 2 * torch.pi
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    along = (rows - height / 2) * angle.sin() + (cols - width / 2) * angle.cos()
    return (0.5 + 0.4 * along / max(height, width))[:, None].expand(-1, channels, -1, -1)


def non_affine_residual(corrupted: Tensor, clean: Tensor) -> float:
    """Mean squared residual of a plane fitted to the central half of each corrupted ramp: an
    affine warp keeps a ramp a plane, so only the non-affine part of a warp leaves a residual."""
    height, width = corrupted.shape[-2:]
    centre = corrupted[..., height // 4 : -(height // 4), width // 4 : -(width // 4)]
    rows, cols = torch.meshgrid(
        torch.arange(centre.shape[-2]), torch.arange(centre.shape[-1]), indexing="ij"
    )
    plane = torch.stack((rows.flatten(), cols.flatten(), torch.ones(rows.numel())), dim=1).double()
    values = centre.flatten(2).transpose(1, 2).double()
    fit = torch.linalg.lstsq(plane.expand(len(values), -1, -1), values).solution
    return ((plane @ fit - values) ** 2).mean().item()


# What grows with severity, where the published settings are not monotone in the mean squared
# difference from the clean image (the default):
MEASURES: dict[str, Callable[[Tensor, Tensor], float]] = {
    # the image's weight falls from 0.9 to 0.85 at the same frost weight from severity 3 to 4,
    # which darkens the image towards the clean one; the frost's share of the image still grows
    "frost": uncorrelated_share,
    # the coarse grid of 30, 28, 27, 24, 20 px (at 32) misaligns with the fine one by an amount
    # that does not follow its size, so the squared difference goes up and down; the coarseness
    # itself grows
    "pixelate": repeated_lines,
    # the affine jitter shrinks (0.08 to 0.03 of the side) while the elastic displacement grows,
    # so every image distance falls; the non-affine distortion, measured on ramps, grows
    "elastic_transform": non_affine_residual,
}


@pytest.mark.parametrize("name", MONOTONE)
def test_a_higher_severity_distorts_more(name: str, clean: Tensor) -> None:
    measure = MEASURES.get(name, mean_squared_difference)
    images = ramps(clean) if name == "elastic_transform" else clean
    distortion = [
        measure(corrupt(images, name, severity, seeds_for(images)), images)
        for severity in SEVERITIES
    ]
    # non-decreasing up to float rounding: motion blur's severities 3 and 4 differ only in taps
    # of weight below 1e-7
    assert all(b >= a * (1 - 1e-6) for a, b in pairwise(distortion)), distortion
    assert distortion[-1] > distortion[0], distortion


def neighbour_energy(images: Tensor) -> float:
    """Mean squared difference between neighbouring pixels: what a blur takes away."""
    down = (images[..., 1:, :] - images[..., :-1, :]) ** 2
    across = (images[..., 1:] - images[..., :-1]) ** 2
    return (down.mean() + across.mean()).item()


def test_glass_blur_severities_raise_its_blur_then_its_copying_passes(clean: Tensor) -> None:
    """The published settings (sigma, passes) are (0.05, 1), (0.25, 1), (0.4, 1), (0.25, 2),
    (0.4, 2): at one number of passes the blur grows, and it smooths away the jitter of the
    copies, so no single image distance grows with severity. Each ingredient grows as set."""
    corrupted = [corrupt(clean, "glass_blur", s, seeds_for(clean)) for s in SEVERITIES]
    energy = [neighbour_energy(images) for images in corrupted]
    assert energy[0] >= energy[1] >= energy[2] and energy[3] >= energy[4], energy
    distance = [mean_squared_difference(images, clean) for images in corrupted]
    assert min(distance[3:]) > max(distance[:3]), distance


@pytest.mark.parametrize("name", CORRUPTIONS)
@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_output_has_the_input_shape_and_stays_in_range(name: str, channels: int, size: int) -> None:
    images = torch.rand(2, channels, size, size, generator=torch.Generator().manual_seed(2))
    images[0, :, :4] = 1.0  # saturated and black areas, where brightening or noise could overflow
    images[1, :, :4] = 0.0
    corrupted = corrupt(images, name, 5, seeds_for(images))
    assert corrupted.shape == images.shape and corrupted.dtype == images.dtype
    assert corrupted.min() >= 0 and corrupted.max() <= 1 and not corrupted.isnan().any()


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_a_low_precision_batch_comes_back_in_its_dtype(name: str) -> None:
    images = smooth_rgb(2).to(torch.bfloat16)
    corrupted = corrupt(images, name, 2, seeds_for(images))
    assert corrupted.dtype == torch.bfloat16 and corrupted.shape == images.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", CORRUPTIONS)
def test_cuda_corrupts_as_the_cpu_does(name: str) -> None:
    images = smooth_rgb(4)
    on_cpu = corrupt(images, name, 5, seeds_for(images))
    on_cuda = corrupt(images.cuda(), name, 5, seeds_for(images).cuda())
    assert on_cuda.device.type == "cuda"
    # the same random numbers; float rounding may flip a rare JPEG rounding or snow threshold
    apart = (on_cuda.cpu() - on_cpu).abs() > 1e-3
    assert apart.float().mean() < 0.01


@pytest.mark.parametrize("name", ["frosted", "", "Gaussian_noise"])
def test_an_unknown_corruption_is_named_with_the_choices(name: str) -> None:
    with pytest.raises(ValueError, match=rf"unknown corruption '{name}': choose one of gaussian"):
        corrupt(smooth_rgb(1), name, 1, torch.zeros(1, dtype=torch.int64))


@pytest.mark.parametrize("severity", [0, 6, -1])
def test_an_unknown_severity_is_named_with_the_choices(severity: int) -> None:
    with pytest.raises(ValueError, match=rf"unknown severity {severity} of fog: .*1, 2, 3, 4, 5"):
        corrupt(smooth_rgb(1), "fog", severity, torch.zeros(1, dtype=torch.int64))


def test_images_that_are_not_a_grey_or_rgb_batch_with_one_seed_each_are_refused() -> None:
    with pytest.raises(ValueError, match=r"not \(1, 2, 8, 8\)"):
        corrupt(torch.rand(1, 2, 8, 8), "fog", 1, torch.zeros(1, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"and \(2,\)"):
        corrupt(torch.rand(1, 3, 8, 8), "fog", 1, torch.zeros(2, dtype=torch.int64))
