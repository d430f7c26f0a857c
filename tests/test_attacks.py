"""FGSM and PGD in pixel space (analysis/robustness/attacks.py): the closed-form optimum on a
linear model, PGD never weaker than FGSM, the epsilon ball and pixel range, seeded random starts,
and the pixel-space wrapper against the data pipeline's normalisation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vestige.analysis.robustness.attacks import (
    PixelSpace,
    attacked_correct,
    fgsm,
    pgd,
    random_start_offsets,
)
from vestige.data.transforms import Normalise

NORMS = ("linf", "l2")
EPSILONS = {"linf": [0.01, 0.03, 0.1], "l2": [0.1, 0.5, 2.0]}
SEEDS = list(range(100, 116))


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def linear_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2)).eval()


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 5)).eval()


def conv_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(24, 5),
    ).eval()


def pixels(low: float = 0.0, high: float = 1.0, n: int = 16, seed: int = 1) -> Tensor:
    return low + (high - low) * torch.rand(n, 3, 8, 8, generator=generator(seed))


def labels(classes: int, n: int = 16, seed: int = 2) -> Tensor:
    return torch.randint(classes, (n,), generator=generator(seed))


def losses(model: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
    with torch.no_grad():
        return F.cross_entropy(model(images), targets, reduction="none")


def weight_difference(model: nn.Module, targets: Tensor) -> Tensor:
    """w_wrong - w_true per image, shaped like the images."""
    weight = model[1].weight.detach()
    return (weight[1 - targets] - weight[targets]).view(-1, 3, 8, 8)


@pytest.mark.parametrize("norm", NORMS)
def test_pgd_without_steps_or_random_start_returns_the_clean_images(norm: str) -> None:
    model, images, targets = mlp(), pixels(), labels(5)
    assert torch.equal(pgd(model, images, targets, 0.1, 0, 0.0, norm), images)
    clean = int((model(images).argmax(1) == targets).sum())
    attack = lambda x, y, e: pgd(model, x, y, e, 0, 0.0, norm)  # noqa: E731
    assert attacked_correct(model, images, targets, [0.03, 0.3], attack) == [clean, clean]


def test_linf_attacks_on_a_linear_model_reach_the_closed_form_optimum() -> None:
    """Inside [0, 1] with room to spare, the logit margin is maximised at
    epsilon * sign(w_wrong - w_true); PGD reaches it from any random start, since 10 steps of
    epsilon / 4 cross the box."""
    model, images, targets = linear_model(), pixels(0.3, 0.7), labels(2)
    for epsilon in EPSILONS["linf"]:
        optimum = epsilon * weight_difference(model, targets).sign()
        attacked = fgsm(model, images, targets, epsilon, "linf")
        torch.testing.assert_close(attacked - images, optimum, rtol=0, atol=1e-6)
        attacked = pgd(model, images, targets, epsilon, 10, epsilon / 4, "linf", True, SEEDS)
        torch.testing.assert_close(attacked - images, optimum, rtol=0, atol=1e-6)


def test_l2_attacks_on_a_linear_model_reach_the_closed_form_optimum() -> None:
    """The optimum in the L2 ball is epsilon times the unit vector of w_wrong - w_true."""
    model, images, targets = linear_model(), pixels(0.3, 0.7), labels(2)
    difference = weight_difference(model, targets)
    unit = difference / difference.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    for epsilon in [0.1, 0.5, 1.0]:
        attacked = fgsm(model, images, targets, epsilon, "l2")
        torch.testing.assert_close(attacked - images, epsilon * unit, rtol=0, atol=1e-6)
        attacked = pgd(model, images, targets, epsilon, 10, epsilon / 4, "l2")
        torch.testing.assert_close(attacked - images, epsilon * unit, rtol=0, atol=1e-6)


@pytest.mark.parametrize("build", [linear_model, mlp, conv_net])
@pytest.mark.parametrize("norm", NORMS)
def test_pgd_loss_is_never_below_fgsm_loss_at_the_same_epsilon(build, norm: str) -> None:
    """Without random start and with step_size = epsilon, PGD's first step is FGSM's."""
    model = build()
    classes = model[-1].out_features
    images, targets = pixels(), labels(classes)
    stronger = []
    for epsilon in EPSILONS[norm]:
        fast = losses(model, fgsm(model, images, targets, epsilon, norm), targets)
        projected = losses(model, pgd(model, images, targets, epsilon, 5, epsilon, norm), targets)
        assert (projected >= fast - 1e-6).all()
        stronger.append(bool((projected > fast + 1e-6).any()))
    if build is not linear_model:
        assert any(stronger), "PGD's later steps never raised the loss of any image"


@pytest.mark.parametrize("norm", NORMS)
def test_more_pgd_steps_never_lower_the_loss(norm: str) -> None:
    model, images, targets = conv_net(), pixels(), labels(5)
    epsilon = EPSILONS[norm][1]
    previous = None
    for steps in [1, 3, 6]:
        attacked = pgd(model, images, targets, epsilon, steps, epsilon / 2, norm, True, SEEDS)
        loss = losses(model, attacked, targets)
        if previous is not None:
            assert (loss >= previous - 1e-6).all()
        previous = loss


@pytest.mark.parametrize("norm", NORMS)
def test_perturbations_stay_in_the_epsilon_ball_and_the_pixel_range(norm: str) -> None:
    """Images span [0, 1], so clipping binds; a step of twice epsilon makes projection bind."""
    model, images, targets = mlp(), pixels(), labels(5)
    for epsilon in EPSILONS[norm]:
        attacked = [
            fgsm(model, images, targets, epsilon, norm),
            pgd(model, images, targets, epsilon, 4, 2 * epsilon, norm, True, SEEDS),
            pgd(model, images, targets, epsilon, 0, 0.0, norm, True, SEEDS),
        ]
        for adversarial in attacked:
            assert adversarial.min() >= 0 and adversarial.max() <= 1
            change = (adversarial - images).flatten(1)
            size = change.abs().amax(1) if norm == "linf" else change.norm(dim=1)
            assert (size <= epsilon * (1 + 1e-5)).all()
            assert (size > 0).all()


@pytest.mark.parametrize("norm", NORMS)
def test_random_start_is_fixed_by_the_seeds_and_independent_of_the_batch(norm: str) -> None:
    images = pixels()
    rng = torch.get_rng_state()
    offsets = random_start_offsets(images, 0.1, norm, SEEDS)
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(random_start_offsets(images, 0.1, norm, SEEDS), offsets)
    assert torch.equal(random_start_offsets(images[3:7], 0.1, norm, SEEDS[3:7]), offsets[3:7])
    other = random_start_offsets(images, 0.1, norm, [seed + 1000 for seed in SEEDS])
    assert not torch.isclose(other, offsets).flatten(1).all(1).any()
    start = pgd(mlp(), images[3:7], labels(5)[3:7], 0.1, 0, 0.0, norm, True, SEEDS[3:7])
    assert torch.equal(start, (images[3:7] + offsets[3:7]).clamp(0, 1))


def test_random_starts_fill_the_box_and_lie_inside_the_ball() -> None:
    images = pixels(n=64)
    seeds = list(range(64))
    box = random_start_offsets(images, 0.1, "linf", seeds)
    assert box.abs().max() <= 0.1 and box.abs().max() > 0.099
    assert abs(float(box.mean())) < 3e-3
    radii = random_start_offsets(images, 0.5, "l2", seeds).flatten(1).norm(dim=1)
    assert (radii <= 0.5 * (1 + 1e-6)).all()
    # uniform in a 192-dimensional ball: almost all of the volume is near the sphere
    assert (radii > 0.45).all()


def test_pixel_space_gives_the_network_what_the_data_pipeline_gives() -> None:
    mean, std = [0.2860], [0.3530]
    grey = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8, generator=generator(3))
    normalise = Normalise(mean, std, channels=3)
    loaded = torch.stack([normalise(image) for image in grey])
    model = conv_net()
    wrapper = PixelSpace(model, Normalise(mean, std, channels=3))
    assert torch.equal(wrapper.normalise(grey.float() / 255), loaded)
    assert torch.equal(wrapper(grey.float() / 255), model(loaded))
    recovered = wrapper.pixels(loaded)
    assert recovered.shape == grey.shape
    torch.testing.assert_close(recovered, grey.float() / 255, rtol=0, atol=1e-6)


def test_pixel_space_recovers_colour_pixels() -> None:
    mean, std = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]
    images = pixels()
    loaded = torch.stack([Normalise(mean, std, channels=3)(image) for image in images])
    wrapper = PixelSpace(conv_net(), Normalise(mean, std, channels=3))
    assert torch.equal(wrapper.normalise(images), loaded)
    torch.testing.assert_close(wrapper.pixels(loaded), images, rtol=0, atol=1e-6)


def test_attacks_leave_the_parameters_and_their_gradients_alone() -> None:
    model, images, targets = conv_net(), pixels(), labels(5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    free = pgd(model, images, targets, 0.03, 3, 0.01, "linf", True, SEEDS)
    with torch.no_grad():
        inside_no_grad = pgd(model, images, targets, 0.03, 3, 0.01, "linf", True, SEEDS)
    fgsm(model, images, targets, 0.5, "l2")
    assert torch.equal(free, inside_no_grad)
    for name, parameter in model.named_parameters():
        assert parameter.grad is None, name
        assert parameter.requires_grad, name
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name


def test_attacked_correct_counts_per_epsilon() -> None:
    """On a linear model the attack is optimal, so accuracy cannot rise with epsilon."""
    model, images, targets = linear_model(), pixels(0.3, 0.7, n=64), labels(2, n=64)
    epsilons = [0.0, 0.002, 0.01, 0.05]
    attack = lambda x, y, e: fgsm(model, x, y, e, "linf")  # noqa: E731
    correct = attacked_correct(model, images, targets, epsilons, attack)
    for epsilon, count in zip(epsilons, correct, strict=True):
        attacked = fgsm(model, images, targets, epsilon, "linf")
        assert count == int((model(attacked).argmax(1) == targets).sum())
    assert correct[0] == int((model(images).argmax(1) == targets).sum())
    assert correct == sorted(correct, reverse=True) and correct[-1] < correct[0]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"epsilon": -0.1}, "epsilon=-0.1"),
        ({"norm": "l1"}, "norm='l1'"),
        ({"steps": -1}, "steps=-1"),
        ({"step_size": 0.0}, "step_size=0.0"),
        ({"random_start": True}, "seeds of length None"),
        ({"random_start": True, "seeds": [1, 2]}, "seeds of length 2"),
    ],
)
def test_bad_attack_settings_are_refused_with_the_fix(arguments: dict, message: str) -> None:
    settings = {"epsilon": 0.1, "steps": 2, "step_size": 0.05, "norm": "linf", **arguments}
    with pytest.raises(ValueError, match=message):
        pgd(mlp(), pixels(), labels(5), **settings)


def test_images_outside_the_pixel_range_are_refused() -> None:
    normalised = (pixels() - 0.5) / 0.25
    with pytest.raises(ValueError, match="PixelSpace.pixels"):
        fgsm(mlp(), normalised, labels(5), 0.1, "linf")
    with pytest.raises(ValueError, match="epsilon=-1"):
        attacked_correct(mlp(), pixels(), labels(5), [0.1, -1], lambda x, y, e: x)
