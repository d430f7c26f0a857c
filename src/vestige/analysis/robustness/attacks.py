"""FGSM and PGD in pixel space, L-inf and L2: the gradient-based attacks of Leavitt & Morcos'
robustness paper (../shared/reference/class-selectivity.md §7: higher selectivity, more robust to
them).

An epsilon means something only in the space of the images themselves, so attacks perturb pixels
in [0, 1] and clip there; `PixelSpace` puts the data's normalisation in front of the network.
The model runs as the caller left it (eval mode, fp32, no autocast). Gradients are taken in the
input only (`torch.autograd.grad`): no parameter's `.grad` is touched, and every image is its
own problem (the batch is summed, and in eval mode no image sees another).

PGD returns, per image, the iterate of highest loss among its start and every step's result,
not the last one. Every iterate lies in the epsilon ball, so keeping the best only makes the
attack stronger (the last iterate of fixed-size steps can oscillate past the maximum), and it
gives PGD properties by construction rather than by luck: 0 steps return the start (the clean
images without random start); more steps never lower the loss; and without random start and
with `step_size == epsilon` its first step is FGSM's, computed by the same code, so its loss is
never below FGSM's. It costs one forward pass more than returning the last iterate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vestige.data.transforms import Normalise

NORMS = ("linf", "l2")

Forward = Callable[[Tensor], Tensor]  # pixel images -> logits


class PixelSpace(nn.Module):
    """`model` on pixel images in [0, 1]: the data pipeline's own `Normalise` in front of it, so
    the network gets bitwise its usual input, and the way back from a normalised batch."""

    def __init__(self, model: nn.Module, normalise: Normalise) -> None:
        super().__init__()
        self.model = model
        self.normalise = normalise

    def pixels(self, normalised: Tensor) -> Tensor:
        """The pixel images of a normalised eval batch (repeated grey channels dropped), clipped
        to [0, 1] against rounding: equal to the loader's pixels to about 1e-7."""
        mean, std = (v.to(normalised.device) for v in (self.normalise.mean, self.normalise.std))
        return (normalised[:, : len(mean)] * std + mean).clamp(0, 1)

    def forward(self, pixels: Tensor) -> Tensor:
        return self.model(self.normalise(pixels))


def check_attack(epsilon: float, norm: str, steps: int = 1, step_size: float = 1.0) -> None:
    """ValueError naming the bad setting and its fix, before any work."""
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r} is invalid: use one of {', '.join(NORMS)}")
    check_epsilon(epsilon)
    if steps < 0:
        raise ValueError(f"steps={steps!r} is invalid: use 0 or more PGD steps")
    if steps > 0 and step_size <= 0:
        raise ValueError(f"step_size={step_size!r} is invalid: use a step > 0 (pixels in [0, 1])")


def check_epsilon(epsilon: float) -> None:
    """An attack's radius is a distance in pixel space, so it cannot be negative."""
    if epsilon < 0:
        raise ValueError(f"epsilon={epsilon!r} is invalid: use a radius >= 0 (pixels in [0, 1])")


def fgsm(forward: Forward, images: Tensor, labels: Tensor, epsilon: float, norm: str) -> Tensor:
    """One step of size `epsilon` along the sign (L-inf) or the direction (L2) of the loss
    gradient from the clean images, clipped to [0, 1]: the fast gradient (sign) method."""
    check_attack(epsilon, norm)
    _check_pixels(images)
    _, gradient = _loss_and_gradient(forward, images, labels, True)
    return _ascent_step(images, images, gradient, epsilon, epsilon, norm)


def pgd(
    forward: Forward,
    images: Tensor,
    labels: Tensor,
    epsilon: float,
    steps: int,
    step_size: float,
    norm: str,
    random_start: bool = False,
    seeds: Sequence[int] | None = None,
) -> Tensor:
    """Projected gradient ascent on the cross-entropy in the epsilon ball around each image,
    clipped to [0, 1] after every step; per image the best iterate (module docstring). Random
    start: uniform in the ball, drawn per image from a CPU generator seeded with `seeds[i]`, so
    an image's start depends neither on its batch nor on the device."""
    check_attack(epsilon, norm, steps, step_size)
    _check_pixels(images)
    start = images
    if random_start:
        start = (images + random_start_offsets(images, epsilon, norm, seeds)).clamp(0, 1)
    if steps == 0:
        return start.detach()
    adversarial = best = start.detach()
    best_loss = torch.full(labels.shape, -torch.inf, device=images.device)
    for step in range(steps + 1):
        loss, gradient = _loss_and_gradient(forward, adversarial, labels, step < steps)
        better = loss > best_loss
        best = torch.where(_per_image(better, images), adversarial, best)
        best_loss = torch.where(better, loss, best_loss)
        if gradient is not None:
            adversarial = _ascent_step(images, adversarial, gradient, step_size, epsilon, norm)
    return best


def attacked_correct(
    forward: Forward,
    images: Tensor,
    labels: Tensor,
    epsilons: Sequence[float],
    attack: Callable[[Tensor, Tensor, float], Tensor],
) -> list[int]:
    """Images still classified correctly after `attack(images, labels, epsilon)`, per epsilon
    (e.g. `lambda x, y, e: pgd(forward, x, y, e, 10, e / 4, "linf", True, seeds)`)."""
    for epsilon in epsilons:
        check_epsilon(epsilon)
    correct = []
    for epsilon in epsilons:
        attacked = attack(images, labels, epsilon)
        with torch.no_grad():
            correct.append(int((forward(attacked).argmax(1) == labels).sum()))
    return correct


def random_start_offsets(
    images: Tensor, epsilon: float, norm: str, seeds: Sequence[int] | None
) -> Tensor:
    """A uniform draw from the L-inf box or the L2 ball of radius `epsilon` per image, from a CPU
    generator seeded with that image's seed (never torch's global RNG), on the images' device."""
    if seeds is None or len(seeds) != len(images):
        count = None if seeds is None else len(seeds)
        raise ValueError(f"seeds of length {count} is invalid: give one seed per image")
    shape = images.shape[1:]
    offsets = []
    for seed in seeds:
        generator = torch.Generator().manual_seed(int(seed))
        if norm == "linf":
            offsets.append((torch.rand(shape, generator=generator) * 2 - 1) * epsilon)
        else:
            direction = torch.randn(shape, generator=generator)
            radius = epsilon * torch.rand((), generator=generator) ** (1 / direction.numel())
            offsets.append(direction * (radius / direction.norm()))
    return torch.stack(offsets).to(images.device, images.dtype)


def _check_pixels(images: Tensor) -> None:
    """Clipping keeps a perturbation in its ball only around images already in [0, 1]."""
    if images.min() < 0 or images.max() > 1:
        raise ValueError(
            f"images in [{float(images.min()):.3g}, {float(images.max()):.3g}] are invalid: "
            "attack pixel images in [0, 1] (PixelSpace.pixels of a normalised batch)"
        )


def _loss_and_gradient(
    forward: Forward, images: Tensor, labels: Tensor, gradient: bool
) -> tuple[Tensor, Tensor | None]:
    """Per-image cross-entropy and, if asked, its gradient in the images alone."""
    images = images.detach().requires_grad_(gradient)
    with torch.set_grad_enabled(gradient):
        loss = F.cross_entropy(forward(images), labels, reduction="none")
        if not gradient:
            return loss, None
        (grad,) = torch.autograd.grad(loss.sum(), images)
    return loss.detach(), grad


def _ascent_step(
    clean: Tensor, current: Tensor, gradient: Tensor, step_size: float, epsilon: float, norm: str
) -> Tensor:
    """`current` moved `step_size` up the gradient (its sign, or its per-image unit vector),
    projected onto the epsilon ball around `clean`, clipped to [0, 1]."""
    if norm == "linf":
        moved = current + step_size * gradient.sign()
        offset = (moved - clean).clamp(-epsilon, epsilon)
    else:
        moved = current + step_size * gradient / _per_image_norm(gradient)
        offset = moved - clean
        offset = offset * (epsilon / _per_image_norm(offset)).clamp(max=1)
    return (clean + offset).clamp(0, 1)


def _per_image_norm(x: Tensor) -> Tensor:
    """The L2 norm of each image, shaped to broadcast over it; never 0 (a zero vector stays 0)."""
    return _per_image(x.flatten(1).norm(dim=1).clamp_min(torch.finfo(x.dtype).tiny), x)


def _per_image(values: Tensor, images: Tensor) -> Tensor:
    """One value per image, shaped to broadcast over `images`."""
    return values.view(-1, *[1] * (images.dim() - 1))
