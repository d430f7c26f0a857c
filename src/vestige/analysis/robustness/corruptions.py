"""The 15 common corruptions of CIFAR-10-C at 5 severities (Hendrycks & Dietterich 2019), batched.

Why: Leavitt & Morcos measure corruption robustness on CIFAR10-C and Tiny ImageNet-C
(../shared/reference/class-selectivity.md §7). We corrupt the evaluation split of every snapshot
on the fly, so each corruption is a batched tensor operation on the images' device, written here
from the published definitions (Hendrycks & Dietterich's CIFAR-10-C generation script), instead of
`imagecorruptions`, which corrupts one numpy image at a time through OpenCV, scikit-image and SciPy
and was last released in December 2020.

Severities: `PARAMETERS` holds CIFAR-10-C's settings, which are for 32 px images. For another
size, the settings in pixels (blur sigmas and radii, the defocus disk, the motion-blur length,
the glass-blur copy distance, rounded to whole pixels) are multiplied by side / 32, side being
the shorter side; the settings in image units (zoom factors, the pixelate fraction, the elastic
settings, which the script gives as multiples of the image size) and JPEG's 8 px blocks are kept
as they are.

Randomness: image i draws from its own CPU `torch.Generator` seeded with seeds[i], so its
corruption depends on its pixels, the corruption, the severity and its seed only: not on its batch
or the device. A seed draws the same numbers at every severity, so severities differ only by their
settings.

Where this differs from the script:
- frost: replaced. The script blends in random crops of six frost photographs, which we do not
  ship; here the frost layer is a procedural grey texture (`frost_texture`), not calibrated
  against the photographs, blended with the script's weights.
- all: no rounding to 8 bits between steps or at the end (CIFAR-10-C is stored as uint8); blurs
  repeat the edge pixels and resampling reflects at the borders, where the libraries each have
  their own border rule; random numbers come from torch, so no image equals CIFAR-10-C's own.
- defocus_blur: at other sizes the disk is decided on the 32 px grid (nearest 32 px offset), so
  a disk that covers neighbours at 32 px still does at 28 px.
- zoom_blur and snow: zoom about the centre by bilinear sampling, where the script crops
  ceil(side / zoom) pixels and rescales them (at most half a pixel apart).
- motion_blur and snow: ImageMagick's motion blur (which the script calls) rebuilt: a one-sided
  line of Gaussian-weighted taps at whole-pixel offsets.
- jpeg_compression: the lossy steps of baseline JPEG with PIL's defaults (YCbCr, 4:2:0 chroma,
  the standard tables scaled by quality, 8x8 DCT, triangle chroma upsampling) with a
  floating-point DCT instead of libjpeg's integer one; entropy coding is lossless and left out.
- grey images (C = 1): the value is the grey level (brightness, snow's whitening) and JPEG codes
  luminance only, as for a greyscale JPEG.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor

from vestige.precision import full_precision

SEVERITIES = (1, 2, 3, 4, 5)

# Hendrycks & Dietterich 2019, CIFAR-10-C settings (their make_cifar_c.py), severity 1 to 5.
PARAMETERS: dict[str, tuple] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # noise std
    "shot_noise": (500, 250, 100, 75, 50),  # photons per unit intensity
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),  # fraction of values set to 0 or 1
    # disk radius, anti-aliasing sigma
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    # sigma, shuffle distance, shuffle passes
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),  # radius, sigma
    # number of zoom factors 1, 1.01, ...: the script's np.arange(1, stop, 0.01) with stop 1.06,
    # 1.11, 1.16, 1.21, 1.26, whose float rounding keeps the first two stops
    "zoom_blur": (7, 12, 16, 21, 26),
    # flake mean, flake std, zoom, threshold, motion radius, motion sigma, image weight
    "snow": (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ),
    "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),  # image, frost weight
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),  # fog weight, fractal decay
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),  # added to the HSV value
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # factor on the distance from the channel mean
    # displacement, its smoothing sigma, affine jitter, as fractions of the side
    "elastic_transform": (
        (0, 0, 0.08),
        (0.05, 0.2, 0.07),
        (0.08, 0.06, 0.06),
        (0.1, 0.04, 0.05),
        (0.1, 0.03, 0.03),
    ),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),  # side of the coarse image, as a fraction
    "jpeg_compression": (80, 65, 58, 50, 40),  # quality
}
CORRUPTIONS: tuple[str, ...] = tuple(PARAMETERS)

# JFIF's RGB -> YCbCr (rows Y, Cb, Cr; Cb and Cr are offset by 128 of 255)
YCBCR = torch.tensor(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
    dtype=torch.float64,
)
# ITU T.81 Annex K: the example luminance and chrominance quantisation tables libjpeg scales
LUMINANCE_TABLE = torch.tensor(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=torch.float64,
)
CHROMINANCE_TABLE = torch.full((8, 8), 99.0, dtype=torch.float64)
CHROMINANCE_TABLE[:4, :4] = torch.tensor(
    [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]
)
FROST_DECAY = 1.5  # a rough fractal: its ridges branch like ice crystals


def check_corruption(name: str, severity: int) -> None:
    """ValueError naming a corruption or severity that does not exist, and the valid ones."""
    if name not in PARAMETERS:
        raise ValueError(f"unknown corruption {name!r}: choose one of {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(
            f"unknown severity {severity!r} of {name}: choose one of "
            + ", ".join(map(str, SEVERITIES))
        )


def corrupt(images: Tensor, name: str, severity: int, seeds: Tensor) -> Tensor:
    """`images` (B, C, H, W) in [0, 1], C = 1 or 3, corrupted by `name` at `severity`, image i
    with its random numbers seeded by seeds[i]; same shape, dtype and device, in [0, 1].
    ValueError for an unknown name or severity (`check_corruption`) or a batch of another shape."""
    check_corruption(name, severity)
    if images.ndim != 4 or images.shape[1] not in (1, 3) or seeds.shape != images.shape[:1]:
        raise ValueError(
            f"corrupt takes images (B, 1 or 3, H, W) and seeds (B,), "
            f"not {tuple(images.shape)} and {tuple(seeds.shape)}"
        )
    parameters = PARAMETERS[name][SEVERITIES.index(severity)]
    generators = [torch.Generator().manual_seed(seed) for seed in seeds.tolist()]
    clean = images.to(torch.promote_types(images.dtype, torch.float32))
    # exact fp32 whatever the caller's autocast or TF32 settings, so every run corrupts alike
    with full_precision(), torch.autocast(images.device.type, enabled=False):
        corrupted = DEFINITIONS[name](clean, generators, parameters)
    return corrupted.clamp(0, 1).to(images.dtype)


# --- shared steps ------------------------------------------------------------------------------


def draw(
    generators: list[torch.Generator], sampler: Callable[..., Tensor], shape: tuple[int, ...]
) -> Tensor:
    """One draw of `shape` per image from its own generator, stacked on the CPU (B, *shape):
    callers move it to the device, so CPU and CUDA runs corrupt with the same numbers."""
    return torch.stack([sampler(shape, generator=generator) for generator in generators])


def side_scale(images: Tensor) -> float:
    """How much larger than CIFAR's 32 px the images are: the factor on settings in pixels."""
    return min(images.shape[-2:]) / 32


def filtered(images: Tensor, kernel: Tensor) -> Tensor:
    """Every channel correlated with `kernel` (odd height and width), edge pixels repeated."""
    height, width = kernel.shape
    planes = images.reshape(-1, 1, *images.shape[-2:])
    padded = F.pad(planes, (width // 2, width // 2, height // 2, height // 2), mode="replicate")
    return F.conv2d(padded, kernel.to(images)[None, None]).reshape(images.shape)


def gaussian_blur(images: Tensor, sigma: float, radius: int) -> Tensor:
    """Separable Gaussian blur cut at `radius` pixels; radius 0 leaves the images as they are,
    as SciPy's filter does for a sigma too small to reach a neighbour."""
    if radius == 0:
        return images
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    taps = taps / taps.sum()
    return filtered(filtered(images, taps[None, :]), taps[:, None])


def rearranged(images: Tensor, sources: Tensor) -> Tensor:
    """Output pixel k of image b shows its input pixel sources[b, k] (flat positions, (B, H*W))."""
    batch, channels, height, width = images.shape
    index = sources.to(images.device)[:, None, :].expand(batch, channels, -1)
    return images.flatten(2).gather(2, index).view(batch, channels, height, width)


def sampled(images: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """Bilinear samples of every image at pixel coordinates `rows`, `cols` ((B or 1, H, W));
    points outside reflect back in."""
    height, width = images.shape[-2:]
    grid = torch.stack((cols * 2 / (width - 1) - 1, rows * 2 / (height - 1) - 1), dim=-1)
    grid = grid.to(images).expand(len(images), -1, -1, -1)
    return F.grid_sample(images, grid, padding_mode="reflection", align_corners=True)


def pixel_grid(images: Tensor) -> tuple[Tensor, Tensor]:
    """Row and column coordinates of every pixel, (1, H, W) each."""
    height, width = images.shape[-2:]
    rows, cols = torch.meshgrid(
        torch.arange(height, dtype=torch.float64),
        torch.arange(width, dtype=torch.float64),
        indexing="ij",
    )
    return rows[None], cols[None]


def zoomed(images: Tensor, factor: float) -> Tensor:
    """The centre of every image enlarged `factor` times to the full size."""
    rows, cols = pixel_grid(images)
    height, width = images.shape[-2:]
    centre_row, centre_col = (height - 1) / 2, (width - 1) / 2
    return sampled(
        images, centre_row + (rows - centre_row) / factor, centre_col + (cols - centre_col) / factor
    )


def motion_blurred(images: Tensor, radius: float, sigma: float, degrees: Tensor) -> Tensor:
    """ImageMagick's motion blur, which the script calls: each pixel averages the
    2 * ceil(radius) + 1 pixels on a line from it at its image's angle (`degrees`, (B,) on the
    CPU), weighted by a Gaussian of the distance, at whole-pixel offsets, edges repeated."""
    taps = torch.arange(2 * math.ceil(radius) + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (taps / sigma) ** 2)
    weights = (weights / weights.sum()).tolist()
    radians = degrees.double()[:, None] * math.pi / 180
    # ImageMagick rounds the offsets half down; the offsets are computed on the CPU so that
    # every device picks the same pixels
    row_offsets = torch.ceil(taps * torch.sin(radians) - 0.5).long()
    col_offsets = torch.ceil(taps * torch.cos(radians) - 0.5).long()
    height, width = images.shape[-2:]
    rows = torch.arange(height)[None, :, None]
    cols = torch.arange(width)[None, None, :]
    blurred = torch.zeros_like(images)
    for tap, weight in enumerate(weights):
        row = (rows + row_offsets[:, tap, None, None]).clamp(0, height - 1)
        col = (cols + col_offsets[:, tap, None, None]).clamp(0, width - 1)
        blurred += weight * rearranged(images, (row * width + col).flatten(1))
    return blurred


def plasma_fractal(generators: list[torch.Generator], images: Tensor, decay: float) -> Tensor:
    """Diamond-square height maps in [0, 1], one per image (B, 1, H, W): the fog layer of
    Hendrycks & Dietterich 2019. Each halving of the step adds uniform noise whose amplitude is
    the previous one over decay**2 (their noise is wibble * U(-wibble, wibble), wibble divided by
    decay each step). The map wraps around at its edges, as theirs; it has the next power of two
    at or above the side and is normalised before it is cropped, as their ImageNet-C crops a
    256 px map to 224."""
    batch, _, height, width = images.shape
    size = 1 << (max(height, width) - 1).bit_length()
    levels = size.bit_length() - 1
    noise = (draw(generators, torch.rand, (4**levels - 1,)) * 2 - 1).to(images)
    heights = images.new_zeros(batch, size, size)
    step, used = size, 0
    for level in range(levels):
        count, half = (size // step) ** 2, step // 2
        fresh = noise[:, used : used + 3 * count] * decay ** (-2 * level)
        squares, across, down = fresh.view(batch, 3, size // step, size // step).unbind(1)
        used += 3 * count
        corners = heights[:, ::step, ::step]
        heights[:, half::step, half::step] = (
            corners + corners.roll(-1, 1) + corners.roll(-1, 2) + corners.roll((-1, -1), (1, 2))
        ) / 4 + squares
        centres = heights[:, half::step, half::step]
        heights[:, ::step, half::step] = (
            centres + centres.roll(1, 1) + corners + corners.roll(-1, 2)
        ) / 4 + across
        heights[:, half::step, ::step] = (
            centres + centres.roll(1, 2) + corners + corners.roll(-1, 1)
        ) / 4 + down
        step = half
    heights = heights - heights.amin(dim=(1, 2), keepdim=True)
    heights = heights / heights.amax(dim=(1, 2), keepdim=True)
    return heights[:, None, :height, :width]


def frost_texture(generators: list[torch.Generator], images: Tensor) -> Tensor:
    """Our stand-in for the script's frost photographs (B, 1, H, W), grey: the ridges of a rough
    diamond-square fractal, bright thin branching lines on a darker ground, as ice crystals on a
    window look. Not calibrated against the photographs, which we do not have."""
    heights = plasma_fractal(generators, images, FROST_DECAY)
    return (1 - (2 * heights - 1).abs()) ** 2


def luma(images: Tensor) -> Tensor:
    """Grey level (B, 1, H, W): JFIF's luma of RGB images, the value itself of grey ones."""
    if images.shape[1] == 1:
        return images
    return torch.einsum("c,bchw->bhw", YCBCR[0].to(images), images)[:, None]


def box_resize_matrix(size: int, new_size: int) -> Tensor:
    """(new_size, size) matrix of PIL's BOX resampling along one axis: each new pixel averages
    the pixels whose centres lie within its footprint (at least one, the nearest, when
    enlarging)."""
    scale = size / new_size
    support = 0.5 * max(scale, 1)
    centres = (torch.arange(new_size, dtype=torch.float64)[:, None] + 0.5) * scale
    pixels = torch.arange(size, dtype=torch.float64)[None, :]
    first = torch.clamp(torch.floor(centres - support + 0.5), min=0)
    last = torch.clamp(torch.floor(centres + support + 0.5), max=size)
    distance = (pixels + 0.5 - centres) / max(scale, 1)
    inside = (pixels >= first) & (pixels < last) & (distance > -0.5) & (distance <= 0.5)
    weights = inside.double()
    return weights / weights.sum(dim=1, keepdim=True)


def jpeg_quantised(planes: Tensor, table: Tensor, quality: int) -> Tensor:
    """Planes of 0-255 samples (B, K, H, W), H and W multiples of 8, through JPEG's lossy core:
    level shift, 8x8 DCT, quantisation by `table` scaled to `quality` as libjpeg does, back."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    steps = torch.clamp(torch.floor((table * scale + 50) / 100), 1, 255).to(planes)
    frequencies = torch.arange(8, dtype=torch.float64)
    dct = torch.cos((2 * frequencies[None, :] + 1) * frequencies[:, None] * math.pi / 16)
    dct = (dct * torch.where(frequencies == 0, math.sqrt(1 / 8), 0.5)[:, None]).to(planes)
    batch, count, height, width = planes.shape
    blocks = (planes - 128).view(batch, count, height // 8, 8, width // 8, 8)
    coefficients = torch.einsum("uy,bkiyjx,vx->bkijuv", dct, blocks, dct)
    coefficients = torch.round(coefficients / steps) * steps
    restored = torch.einsum("uy,bkijuv,vx->bkiyjx", dct, coefficients, dct)
    return (restored.reshape(planes.shape) + 128).clamp(0, 255)


# --- the corruptions ---------------------------------------------------------------------------


def gaussian_noise(images: Tensor, generators: list[torch.Generator], std: float) -> Tensor:
    """Sensor noise: independent Gaussian noise on every value."""
    return images + std * draw(generators, torch.randn, images.shape[1:]).to(images)


def shot_noise(images: Tensor, generators: list[torch.Generator], photons: float) -> Tensor:
    """Poisson photon counts; drawn on the CPU, where the generators are."""
    rates = images.cpu() * photons
    counts = [torch.poisson(rate, generator=g) for rate, g in zip(rates, generators, strict=True)]
    return torch.stack(counts).to(images) / photons


def impulse_noise(images: Tensor, generators: list[torch.Generator], amount: float) -> Tensor:
    """Salt and pepper: each value is set to 0 or 1 (equally often) with probability `amount`."""
    draws = draw(generators, torch.rand, images.shape[1:]).to(images)
    return torch.where(draws < amount, (draws >= amount / 2).to(images), images)


def defocus_blur(images: Tensor, generators: list[torch.Generator], parameters: tuple) -> Tensor:
    """A disk kernel, anti-aliased by a small Gaussian. The disk is decided on the 32 px grid
    (each offset rounded to its nearest 32 px offset), so it rescales without vanishing below
    one pixel."""
    radius, alias_sigma = parameters
    scale = side_scale(images)
    reach = math.ceil((math.floor(radius) + 0.5) * scale)
    offsets = torch.arange(-reach, reach + 1, dtype=torch.float64)
    at_32 = offsets.sign() * torch.floor(offsets.abs() / scale + 0.5)
    disk = (at_32[:, None] ** 2 + at_32[None, :] ** 2 <= radius**2).double()
    blurred = filtered(images, disk / disk.sum())
    return gaussian_blur(blurred, alias_sigma * scale, max(1, round(scale)))  # OpenCV's 3x3 at 32


def glass_blur(images: Tensor, generators: list[torch.Generator], parameters: tuple) -> Tensor:
    """Blur, give every pixel the value of a random near neighbour, blur again. The script
    "swaps" each position with its neighbour, but through numpy views of RGB pixels the swap
    only copies the neighbour's value in; we copy as it does. It visits positions from bottom
    right to top left and a copied value may be copied on, so this runs position by position,
    for all images of the batch at once."""
    sigma, distance, passes = parameters
    scale = side_scale(images)
    sigma, distance = sigma * scale, max(1, round(distance * scale))
    radius = int(4 * sigma + 0.5)  # scikit-image's Gaussian reaches 4 sigma
    batch, _, height, width = images.shape
    rows = range(height - distance, distance, -1)
    cols = range(width - distance, distance, -1)
    positions = [row * width + col for _ in range(passes) for row in rows for col in cols]
    # the script's np.random.randint(-distance, distance): the upper end is excluded
    shifts = draw(generators, partial(torch.randint, -distance, distance), (len(positions), 2))
    neighbours = torch.tensor(positions) + shifts[..., 0] * width + shifts[..., 1]
    sources = torch.arange(height * width).repeat(batch, 1)
    every = torch.arange(batch)
    for step, position in enumerate(positions):
        sources[:, position] = sources[every, neighbours[:, step]]
    copied = rearranged(gaussian_blur(images, sigma, radius), sources)
    return gaussian_blur(copied, sigma, radius)


def motion_blur(images: Tensor, generators: list[torch.Generator], parameters: tuple) -> Tensor:
    """Motion blur at a random angle within 45 degrees of horizontal."""
    radius, sigma = parameters
    scale = side_scale(images)
    degrees = draw(generators, torch.rand, ()) * 90 - 45
    return motion_blurred(images, radius * scale, sigma * scale, degrees)


def zoom_blur(images: Tensor, generators: list[torch.Generator], count: int) -> Tensor:
    """The image averaged with its centre zoomed by 1, 1.01, ... (count factors, 1 included)."""
    total = images.clone()
    for step in range(count):
        total += zoomed(images, 1 + 0.01 * step)
    return total / (count + 1)


def snow(images: Tensor, generators: list[torch.Generator], parameters: tuple) -> Tensor:
    """Thresholded Gaussian noise zoomed into flakes, motion-blurred into falling streaks at a
    random angle, added twice (once turned upside down) to the image lightened towards white."""
    mean, std, zoom, threshold, radius, sigma, image_weight = parameters
    scale = side_scale(images)
    noise = draw(generators, torch.randn, (1, *images.shape[-2:])).to(images) * std + mean
    flakes = zoomed(noise, zoom)
    flakes = torch.where(flakes < threshold, 0, flakes)
    degrees = draw(generators, torch.rand, ()) * 90 - 135
    flakes = motion_blurred(flakes.clamp(0, 1), radius * scale, sigma * scale, degrees)
    whitened = torch.maximum(images, luma(images) * 1.5 + 0.5)
    lightened = image_weight * images + (1 - image_weight) * whitened
    return lightened + flakes + flakes.flip(-2, -1)


def frost(images: Tensor, generators: list[torch.Generator], parameters: tuple) -> Tensor:
    """Replaced: the script's frost photographs are our procedural `frost_texture`."""
    image_weight, frost_weight = parameters
    return image_weight * images + frost_weight * frost_texture(generators, images)


def fog(images: Tensor, generators: list[torch.Generator], parameters: tuple) -> Tensor:
    """A fractal haze added, then the image darkened so its brightest point stays in range."""
    fog_weight, decay = parameters
    brightest = images.amax(dim=(1, 2, 3), keepdim=True)
    fogged = images + fog_weight * plasma_fractal(generators, images, decay)
    return fogged * brightest / (brightest + fog_weight)


def brightness(images: Tensor, generators: list[torch.Generator], shift: float) -> Tensor:
    """HSV value raised by `shift` at the same hue and saturation: the channels scale together;
    black (saturation 0) turns grey."""
    value = images.amax(dim=1, keepdim=True)
    raised = (value + shift).clamp(max=1)
    return torch.where(value > 0, images * raised / value.clamp(min=1e-12), raised)


def contrast(images: Tensor, generators: list[torch.Generator], factor: float) -> Tensor:
    """Every channel pulled towards its mean over the image."""
    means = images.mean(dim=(2, 3), keepdim=True)
    return (images - means) * factor + means


def elastic_transform(
    images: Tensor, generators: list[torch.Generator], parameters: tuple
) -> Tensor:
    """A random affine warp (three points around the centre jittered), then each pixel moved by
    a smoothed random displacement field; both resampled bilinearly."""
    side = min(images.shape[-2:])
    displacement, sigma, jitter = (fraction * side for fraction in parameters)
    height, width = images.shape[-2:]
    centre, reach = torch.tensor([width // 2, height // 2], dtype=torch.float64), side // 3
    anchors = centre + reach * torch.tensor([[1, 1], [1, -1], [-1, -1]], dtype=torch.float64)
    moved = anchors + (draw(generators, torch.rand, (3, 2)).double() * 2 - 1) * jitter
    # the affine map from moved back to anchors: where each output pixel comes from
    ones = torch.ones(len(images), 3, 1, dtype=torch.float64)
    inverse = torch.linalg.solve(torch.cat((moved, ones), dim=2), anchors.expand_as(moved))
    rows, cols = pixel_grid(images)
    points = torch.stack((cols, rows, torch.ones_like(rows)), dim=-1)
    sources = torch.einsum("bhwi,bio->bhwo", points.expand(len(images), -1, -1, -1), inverse)
    warped = sampled(images, sources[..., 1], sources[..., 0])
    fields = (draw(generators, torch.rand, (2, height, width)) * 2 - 1).to(images)
    fields = gaussian_blur(fields, sigma, int(3 * sigma + 0.5)) * displacement  # truncate=3
    return sampled(warped, rows.to(images) + fields[:, 0], cols.to(images) + fields[:, 1])


def pixelate(images: Tensor, generators: list[torch.Generator], fraction: float) -> Tensor:
    """Shrunk to `fraction` of the side and enlarged back, both with PIL's BOX filter."""
    height, width = images.shape[-2:]
    small_height, small_width = int(height * fraction), int(width * fraction)
    rows = box_resize_matrix(small_height, height) @ box_resize_matrix(height, small_height)
    cols = box_resize_matrix(small_width, width) @ box_resize_matrix(width, small_width)
    return torch.einsum("ij,bcjk,lk->bcil", rows.to(images), images, cols.to(images))


def jpeg_compression(images: Tensor, generators: list[torch.Generator], quality: int) -> Tensor:
    """Saved as a JPEG of `quality` and read back (see `jpeg_quantised`); chroma is averaged
    over 2x2 pixels and upsampled with libjpeg's triangle filter, which is bilinear."""
    batch, channels, height, width = images.shape
    padded = F.pad(images * 255, (0, -width % 16, 0, -height % 16), mode="replicate")
    if channels == 1:
        return jpeg_quantised(padded, LUMINANCE_TABLE, quality)[..., :height, :width] / 255
    ycbcr = torch.einsum("oc,bchw->bohw", YCBCR.to(images), padded)
    luminance = jpeg_quantised(ycbcr[:, :1], LUMINANCE_TABLE, quality)
    chroma = jpeg_quantised(F.avg_pool2d(ycbcr[:, 1:] + 128, 2), CHROMINANCE_TABLE, quality)
    chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False) - 128
    decoded = torch.cat((luminance, chroma), dim=1)
    rgb = torch.einsum("co,bohw->bchw", torch.linalg.inv(YCBCR).to(images), decoded)
    return rgb[..., :height, :width] / 255


DEFINITIONS: dict[str, Callable[..., Tensor]] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur,
    "glass_blur": glass_blur,
    "motion_blur": motion_blur,
    "zoom_blur": zoom_blur,
    "snow": snow,
    "frost": frost,
    "fog": fog,
    "brightness": brightness,
    "contrast": contrast,
    "elastic_transform": elastic_transform,
    "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
}
