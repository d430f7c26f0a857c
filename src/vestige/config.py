"""Typed config schema (registered in Hydra's ConfigStore) and the checks that run before any work.

Every field a user can set lives in one of these dataclasses, so a misspelled key or a value of
the wrong type is caught by Hydra/OmegaConf while composing; the semantic checks (ranges, paths,
known names) live in `validate` and raise `ConfigError` with one line: the key, the bad value and
the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from vestige.errors import ConfigError
from vestige.step import Step, parse_snapshot_spec

TASKS = ("train", "analyze", "collect", "report")


@dataclass
class ResNetConfig:
    """torchvision ResNet; `stem=small` is the 3x3/1 stem without max-pool for 28-64 px inputs."""

    name: str = "resnet18"
    stem: str = "small"
    width: float = 1.0  # multiplies every stage's channel count; 1.0 = torchvision's network
    zero_init_residual: bool = False


@dataclass
class ConViTConfig:
    """ConViT / DeiT (reference/convit.md §3); DeiT is `local_up_to_layer=0` with qkv bias."""

    name: str = "convit_ti"
    patch_size: int = 16
    embed_dim: int = 192
    num_heads: int = 4
    depth: int = 12
    mlp_ratio: float = 4.0
    local_up_to_layer: int = 10  # the first N blocks are GPSA, the rest plain self-attention
    locality_strength: float = 1.0
    qkv_bias: bool = False
    drop_path: float = 0.1


@dataclass
class SyntheticConfig:
    """The built-in dataset: class prototypes plus noise, generated from the seed, no files."""

    train_size: int = 2000
    eval_size: int = 500
    noise: float = 0.6
    prototype_seed: int = 1234


@dataclass
class DataConfig:
    name: str = "synthetic"
    root: str | None = None
    num_classes: int = 10
    channels: int = 3
    image_size: int = 32
    augment: bool = False  # train-split augmentation (random crop/flip, or RandomResizedCrop)
    randaugment: bool = False  # with augment: RandAugment(2 ops, magnitude 9), uint8 images
    random_erasing: float = 0.0  # with augment: probability of random erasing
    mixup: float = 0.0  # Mixup alpha on training batches (0: off)
    cutmix: float = 0.0  # CutMix alpha on training batches (0: off); both: one per batch
    # subsets that keep every class (data/subsets.py): N images drawn per class as evenly as the
    # data allows (seeded by subset_seed), or the first floor(fraction x n_c) of each class
    train_limit: int | None = None
    eval_limit: int | None = None
    fraction: float | None = None  # of every class of the training split (ConViT §5)
    subset_seed: int = 0
    eval_split: str = "test"  # which split evaluation and selectivity use
    download: bool = False
    num_workers: int = 0
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class OptimConfig:
    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    # the usual exclusions: biases, norm weights and other 1-D params, plus model.no_weight_decay()
    decay_exclusions: bool = True


@dataclass
class SchedConfig:
    name: str = "constant"  # constant | step | multistep | cosine
    step_size: str = "30ep"
    milestones: list[str] = field(default_factory=list)
    gamma: float = 0.1
    warmup: str = "0it"
    warmup_start_factor: float = 0.001
    min_lr: float = 0.0


@dataclass
class TrainerConfig:
    epochs: int = 3
    batch_size: int = 64  # global batch: each rank gets batch_size / world_size
    eval_batch_size: int = 256
    label_smoothing: float = 0.0
    grad_accum: int = 1
    sync_batchnorm: bool = False  # under DDP on CUDA: BatchNorm statistics over the global batch
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | bf16 | fp32
    channels_last: str = "auto"  # auto (on CUDA) | "true" | "false"
    deterministic: bool = False
    progress: str = "auto"  # auto (rich on a TTY, plain lines otherwise) | rich | plain | none
    log_every: int = 20  # plain progress line every N steps
    max_steps: int | None = None  # stop early (benchmarks, smoke tests); identity-relevant


@dataclass
class CheckpointConfig:
    # snapshot specs: "0it", "every 1ep", "every 50it until 2ep", "log 8 from 1it to 3ep"
    snapshots: list[str] = field(default_factory=lambda: ["0it", "every 1ep"])
    resume_every: str | None = None  # extra resume checkpoints, e.g. "200it"
    # full training states kept for good at these steps (same rules as snapshots), so that
    # forks can start there: e.g. ["5ep"] or ["every 1ep until 10ep"]
    forkable: list[str] = field(default_factory=list)
    keep_resume: int = 2


@dataclass
class SelectivityConfig:
    """How class selectivity is measured (reference/class-selectivity.md §2)."""

    enabled: bool = True
    units: str = "block_output"  # block_output | all_relu
    eps: float = 1e-6
    # ViT MLP units: GELU outputs can be slightly negative (reference/convit.md §7);
    # keep them, clamp them at 0, or take absolute values before averaging over tokens
    # (a no-op after ReLU, so clamp is the default for every architecture)
    negative: str = "clamp"  # keep | clamp | abs
    # the measurement pass: fp32 (TF32 off) whatever the training precision, or bf16 autocast
    precision: str = "fp32"  # fp32 | bf16


@dataclass
class RegularizerConfig:
    """A term added to the loss: loss = CE - alpha * R (reference/class-selectivity.md §3)."""

    name: str = "none"  # none | selectivity
    # a float, or windows [{from: 0ep, until: 5ep, alpha: 0.0}, {from: 5ep, alpha: -20.0}]
    alpha: Any = 0.0
    stages: list[str] | None = None  # null: every stage but the last, as in Ranadive et al.
    eps: float = 1e-6
    sync: bool = True  # under DDP, R from the global batch's class sums (not each rank's)


@dataclass
class AblationConfig:
    """analysis=ablation: which block-output units are silenced, how, and what they are compared
    with (reference/class-selectivity.md §4)."""

    stages: list[str] | None = None  # null: every stage, one at a time
    # channels silenced per block: null = the paper's grid per stage of C channels (0..C/2 in
    # steps of 15, then C/2..C in steps of 40, and C); or counts such as [0, 16, 64] (> C: C)
    k: list[int] | None = None
    k_fractions: list[float] | None = None  # instead of k: fractions of C, e.g. [0, 0.5, 1]
    value: str = "zero"  # zero | mean (each unit's mean over the ranking images)
    scope: str = "stage"  # stage: all blocks of a stage at once | block: each alone | unit
    top_units: int = 16  # scope=unit: the N most selective (and N random) units of each block
    random_draws: int = 5  # fixed seeded random subsets per block, the same at every snapshot
    # same: rank and evaluate on the whole eval split, as the public code does; heldout: rank on
    # its even-numbered images, evaluate on the odd-numbered ones
    split: str = "same"
    masks_per_forward: int = 1  # ablations run as one batched forward (speed and memory only)


LINEARITY_PROBES = ("linearized", "linear_classifier", "relu_flips")
BN_STATS = ("running", "recompute")
CLASS_TOKEN_CHOICES = ("renormalise", "zero")


@dataclass
class LinearClassifierConfig:
    """The softmax regression on flattened images that analysis=linearity compares the network
    with (Kalimeris et al. 2019), trained once per run and cached with these settings."""

    epochs: int = 10
    lr: float = 1e-3  # AdamW from zero weights
    weight_decay: float = 0.0
    batch_size: int = 256
    train_images: int | None = None  # a seeded random subset of the training split; null: all


@dataclass
class LinearityConfig:
    """analysis=linearity: how close the network is to a linear regime, three ways
    (reference/class-selectivity.md §5, unconfirmed which one the paper used)."""

    probes: list[str] = field(default_factory=lambda: list(LINEARITY_PROBES))
    images: int | None = None  # the first N images of the eval split (one fixed set); null: all
    # each snapshot is paired with (linearised around, ReLU states compared with): `previous`,
    # the chosen snapshot before it; or one fixed snapshot by its step, e.g. 0it
    base: str = "previous"
    # BatchNorm running statistics in the expansion: expand (with the weights) | base (kept at
    # the base snapshot's values), see vestige.analysis.linearized
    buffers: str = "expand"
    classifier: LinearClassifierConfig = field(default_factory=LinearClassifierConfig)


@dataclass
class AttentionConfig:
    """analysis=attention: how a block that carries the class token is compared with one that
    does not (reference/convit.md §6)."""

    # renormalise: each patch's attention over patches rescaled to sum to 1, as in a GPSA block;
    # zero: the share a patch puts on the class token counts as distance 0
    class_token: str = "renormalise"  # renormalise | zero


@dataclass
class AnalysisConfig:
    """task=analyze: which analysis, over which snapshots of `run`."""

    name: str = "selectivity"
    snapshots: list[str] | None = None  # snapshot rules as in checkpoint.snapshots; null: all
    batch_size: int = 256
    images: int = 1024  # analysis=attention: images averaged for nonlocality (convit.md §6)
    # BatchNorm running statistics of each snapshot as stored (running), or re-estimated on
    # bn_images training images before measuring (recompute; analysis/batchnorm.py)
    bn_stats: str = "running"  # running | recompute
    bn_images: int = 1000
    ablation: AblationConfig = field(default_factory=AblationConfig)
    linearity: LinearityConfig = field(default_factory=LinearityConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)


@dataclass
class ReportConfig:
    """task=report: where the page and its figures go, and the page's title."""

    out: str | None = None  # null: <run>/report for one run, <outputs>/reports/<hash> for several
    title: str | None = None  # null: the run's name, or how many runs and conditions


@dataclass
class RunConfig:
    task: str = "train"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    outputs: str = "outputs"
    run: str | None = None  # task=analyze/report: the run directory to work on
    sweep: str | None = None  # task=collect/report: a sweep directory (outputs/sweeps/<name>)
    runs: list[str] | None = None  # task=report: several run directories (seeds grouped)
    model: Any = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    selectivity: SelectivityConfig = field(default_factory=SelectivityConfig)
    regularizer: RegularizerConfig = field(default_factory=RegularizerConfig)
    analysis: AnalysisConfig | None = None
    report: ReportConfig = field(default_factory=ReportConfig)
    # start from another run's full state: fork.from=<run dir> fork.at=5ep (see train/fork.py)
    fork: dict[str, str | None] = field(default_factory=lambda: {"from": None, "at": None})


def register_configs() -> None:
    """Make the schema known to Hydra: `config.yaml` and each group file extend these nodes."""
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(group="model", name="resnet_schema", node=ResNetConfig)
    cs.store(group="model", name="convit_schema", node=ConViTConfig)
    cs.store(group="analysis", name="analysis_schema", node=AnalysisConfig)


# Keys (or whole sections: `analysis`, `report`) that change how a run is carried out, shown or
# analysed, never what its training computes: left out of the run's identity so that, e.g., a
# different progress style resumes the same run directory.
NON_IDENTITY_KEYS = frozenset(
    {
        "task",
        "outputs",
        "run",
        "sweep",
        "runs",
        "analysis",
        "report",
        "device",
        "data.root",
        "data.num_workers",
        "trainer.progress",
        "trainer.log_every",
        "trainer.eval_batch_size",
    }
)


def validate(cfg: Any, world_size: int = 1) -> None:
    """Check the composed config; raise ConfigError with one line for the first bad value."""
    from vestige.data import DATASETS
    from vestige.models import MODELS
    from vestige.selectivity.training import validate_regularizer
    from vestige.train.fork import check_fork

    def fail(key: str, value: Any, fix: str) -> None:
        raise ConfigError(f"{key}={value!r} is invalid: {fix}")

    unknown = _unknown_key(cfg)
    if unknown:
        raise ConfigError(f"unknown config key '{unknown}': {describe_keys(unknown)}")
    if cfg.task not in TASKS:
        fail("task", cfg.task, f"choose one of {', '.join(TASKS)}")
    if cfg.task == "analyze":
        _validate_analysis(cfg)
    if cfg.task == "collect":
        _validate_collect(cfg)
    if cfg.task == "report":
        from vestige.report.inputs import report_runs

        report_runs(cfg)
    if cfg.model.name not in MODELS:
        fail("model", cfg.model.name, f"choose one of {', '.join(sorted(MODELS))}")
    if cfg.data.name not in DATASETS:
        fail("data", cfg.data.name, f"choose one of {', '.join(sorted(DATASETS))}")
    if cfg.data.root is not None and not Path(cfg.data.root).expanduser().is_dir():
        fail("data.root", cfg.data.root, "point it at an existing directory with the dataset")
    if DATASETS[cfg.data.name].needs_root and cfg.data.root is None:
        fail("data.root", None, f"data={cfg.data.name} reads files: set data.root=/path/to/it")
    if hasattr(cfg.model, "stem") and cfg.model.stem not in ("small", "imagenet"):
        fail("model.stem", cfg.model.stem, "use small (28-64 px) or imagenet (224 px)")
    if hasattr(cfg.model, "width") and cfg.model.width <= 0:
        fail("model.width", cfg.model.width, "use a positive width multiplier such as 0.25")
    for key in ("num_classes", "channels", "image_size"):
        if getattr(cfg.data, key) <= 0:
            fail(f"data.{key}", getattr(cfg.data, key), "use a positive integer")
    d = cfg.data
    if (d.randaugment or d.random_erasing) and not d.augment:
        fail("data.augment", d.augment, "RandAugment and random erasing need data.augment=true")
    if d.randaugment and d.name == "synthetic":
        fail("data.randaugment", True, "RandAugment needs uint8 images: not data=synthetic")
    for key in ("random_erasing", "mixup", "cutmix"):
        if getattr(d, key) < 0 or (key == "random_erasing" and d.random_erasing > 1):
            fail(f"data.{key}", getattr(d, key), "use 0 (off) or a positive value (erasing: <= 1)")
    for key in ("train_limit", "eval_limit"):
        value = getattr(cfg.data, key)
        if value is not None and value <= 0:
            fail(f"data.{key}", value, "use a positive number of images, or null for all")
    if d.fraction is not None and not 0 < d.fraction <= 1:
        fail("data.fraction", d.fraction, "use a fraction of every class in (0, 1], or null")
    if d.fraction is not None and d.train_limit is not None:
        fail("data.fraction", d.fraction, "set data.fraction or data.train_limit, not both")
    if cfg.optim.name not in ("sgd", "adamw"):
        fail("optim", cfg.optim.name, "choose sgd or adamw")
    if cfg.optim.lr <= 0:
        fail("optim.lr", cfg.optim.lr, "use a positive learning rate such as 0.1")
    if cfg.optim.weight_decay < 0:
        fail("optim.weight_decay", cfg.optim.weight_decay, "use 0 or a positive value")
    if cfg.sched.name not in ("constant", "step", "multistep", "cosine"):
        fail("sched", cfg.sched.name, "choose constant, step, multistep or cosine")
    _check_step("sched.step_size", cfg.sched.step_size)
    _check_step("sched.warmup", cfg.sched.warmup)
    for i, milestone in enumerate(cfg.sched.milestones):
        _check_step(f"sched.milestones[{i}]", milestone)
    t = cfg.trainer
    if t.epochs <= 0:
        fail("trainer.epochs", t.epochs, "train for at least 1 epoch")
    if t.batch_size <= 0:
        fail("trainer.batch_size", t.batch_size, "use a positive global batch size")
    if t.batch_size % (world_size * t.grad_accum) != 0:
        fail(
            "trainer.batch_size",
            t.batch_size,
            f"must be divisible by world size x grad_accum = {world_size * t.grad_accum}",
        )
    if t.eval_batch_size <= 0:
        fail("trainer.eval_batch_size", t.eval_batch_size, "use a positive batch size")
    if t.grad_accum <= 0:
        fail("trainer.grad_accum", t.grad_accum, "use 1 or more micro-batches per step")
    if not 0 <= t.label_smoothing < 1:
        fail("trainer.label_smoothing", t.label_smoothing, "use a value in [0, 1)")
    if t.precision not in ("auto", "bf16", "fp32"):
        fail("trainer.precision", t.precision, "choose auto, bf16 or fp32")
    if str(t.channels_last) not in ("auto", "true", "false", "True", "False"):
        fail("trainer.channels_last", t.channels_last, "choose auto, true or false")
    if t.progress not in ("auto", "rich", "plain", "none"):
        fail("trainer.progress", t.progress, "choose auto, rich, plain or none")
    if t.max_steps is not None and t.max_steps <= 0:
        fail("trainer.max_steps", t.max_steps, "use a positive number of steps, or null")
    for i, spec in enumerate(cfg.checkpoint.snapshots):
        try:
            parse_snapshot_spec(spec)
        except ValueError as err:
            fail(f"checkpoint.snapshots[{i}]", spec, str(err))
    for i, spec in enumerate(cfg.checkpoint.forkable):
        try:
            parse_snapshot_spec(spec)
        except ValueError as err:
            fail(f"checkpoint.forkable[{i}]", spec, str(err))
    if set(cfg.fork) != {"from", "at"}:
        unknown = sorted(set(cfg.fork) - {"from", "at"})
        raise ConfigError(
            f"unknown config key 'fork.{unknown[0]}': fork takes only fork.from and fork.at"
        )
    check_fork(cfg)
    if cfg.checkpoint.resume_every is not None:
        _check_step("checkpoint.resume_every", cfg.checkpoint.resume_every)
    if cfg.checkpoint.keep_resume < 1:
        fail("checkpoint.keep_resume", cfg.checkpoint.keep_resume, "keep at least 1")
    validate_regularizer(cfg.regularizer)
    if cfg.regularizer.name != "none" and (d.mixup or d.cutmix):
        fail(
            "regularizer",
            cfg.regularizer.name,
            "R needs each image's own class, which Mixup/CutMix blend away: set data.mixup=0 "
            "and data.cutmix=0, or regularizer=none",
        )
    if cfg.selectivity.precision not in ("fp32", "bf16"):
        fail("selectivity.precision", cfg.selectivity.precision, "choose fp32 or bf16")
    if cfg.selectivity.negative not in ("keep", "clamp", "abs"):
        fail("selectivity.negative", cfg.selectivity.negative, "choose keep, clamp or abs")
    if cfg.selectivity.units not in ("block_output", "all_relu"):
        fail("selectivity.units", cfg.selectivity.units, "choose block_output or all_relu")
    if not cfg.device == "auto" and not str(cfg.device).startswith(("cpu", "cuda")):
        fail("device", cfg.device, "choose auto, cpu, cuda or cuda:N")


def _validate_collect(cfg: Any) -> None:
    if cfg.sweep is None or not Path(cfg.sweep).expanduser().is_dir():
        raise ConfigError(
            f"sweep={cfg.sweep!r} is invalid: task=collect needs sweep=<a sweep directory, "
            "e.g. outputs/sweeps/<name>, or any folder holding run directories>"
        )


def _validate_analysis(cfg: Any) -> None:
    from vestige.analysis import ANALYSES
    from vestige.rundir import analysed_run

    run = analysed_run(cfg)
    if cfg.run is not None and not (run / "config.yaml").is_file():
        raise ConfigError(
            f"run={cfg.run!r} is invalid: task=analyze needs run=<a run directory with config.yaml>"
        )
    if not (run / "config.yaml").is_file():
        raise ConfigError(
            f"run=None is invalid: this config's run ({run}) has not been trained; train it "
            "first (the same command without task=analyze), or set run=<a run directory>"
        )
    if cfg.analysis is None:
        raise ConfigError(f"analysis=None is invalid: choose one of {', '.join(sorted(ANALYSES))}")
    if cfg.analysis.images <= 0:
        raise ConfigError(
            f"analysis.images={cfg.analysis.images} is invalid: use a positive number"
        )
    if cfg.analysis.batch_size <= 0:
        raise ConfigError(
            f"analysis.batch_size={cfg.analysis.batch_size} is invalid: use a positive size"
        )
    if cfg.analysis.bn_stats not in BN_STATS:
        raise ConfigError(
            f"analysis.bn_stats={cfg.analysis.bn_stats!r} is invalid: choose "
            f"{' or '.join(BN_STATS)}"
        )
    if cfg.analysis.bn_images <= 0:
        raise ConfigError(
            f"analysis.bn_images={cfg.analysis.bn_images} is invalid: use a positive number"
        )
    if cfg.analysis.attention.class_token not in CLASS_TOKEN_CHOICES:
        raise ConfigError(
            f"analysis.attention.class_token={cfg.analysis.attention.class_token!r} is invalid: "
            f"choose {' or '.join(CLASS_TOKEN_CHOICES)}"
        )
    for i, spec in enumerate(cfg.analysis.snapshots or []):
        try:
            parse_snapshot_spec(spec)
        except ValueError as err:
            raise ConfigError(f"analysis.snapshots[{i}]={spec!r} is invalid: {err}") from None
    if cfg.analysis.name == "ablation":
        _validate_ablation(cfg, run)
    if cfg.analysis.name == "linearity":
        _validate_linearity(cfg.analysis.linearity)


def _validate_ablation(cfg: Any, run: Path) -> None:
    """The ablation settings, and that the run is a ResNet: its units are block outputs."""
    from vestige.models.resnet import ARCHITECTURES

    settings = cfg.analysis.ablation

    def fail(key: str, value: Any, fix: str) -> None:
        value = list(value) if isinstance(value, ListConfig) else value
        raise ConfigError(f"analysis.ablation.{key}={value!r} is invalid: {fix}")

    model = OmegaConf.load(run / "config.yaml").model.name
    if model not in ARCHITECTURES:
        raise ConfigError(
            f"analysis=ablation needs a ResNet run (it silences block outputs); "
            f"run={run} is {model}"
        )
    stages = ("layer1", "layer2", "layer3", "layer4")  # a ResNet's stages
    if settings.stages is not None and not set(settings.stages) <= set(stages):
        fail("stages", settings.stages, f"choose among {', '.join(stages)}, or null for all")
    if settings.stages is not None and not settings.stages:
        fail("stages", settings.stages, "name at least one stage, or null for all")
    if settings.k is not None and settings.k_fractions is not None:
        fail("k", settings.k, "set k (channel counts) or k_fractions, not both")
    if settings.k is not None and (not settings.k or min(settings.k) < 0):
        fail("k", settings.k, "use channel counts >= 0 such as [0, 16, 64], or null: paper grid")
    fractions = settings.k_fractions
    if fractions is not None and (not fractions or not all(0 <= f <= 1 for f in fractions)):
        fail("k_fractions", fractions, "use fractions of C in [0, 1] such as [0, 0.5, 1]")
    for key, choices in (
        ("value", ("zero", "mean")),
        ("scope", ("stage", "block", "unit")),
        ("split", ("same", "heldout")),
    ):
        if getattr(settings, key) not in choices:
            fail(key, getattr(settings, key), f"choose {' or '.join(choices)}")
    for key in ("random_draws", "top_units", "masks_per_forward"):
        if getattr(settings, key) < 1:
            fail(key, getattr(settings, key), "use 1 or more")


def _validate_linearity(settings: Any) -> None:
    from vestige.analysis.linearized import BUFFER_CHOICES

    def fail(key: str, value: Any, fix: str) -> None:
        value = list(value) if isinstance(value, ListConfig) else value
        raise ConfigError(f"analysis.linearity.{key}={value!r} is invalid: {fix}")

    probes = list(settings.probes)
    if not probes or not set(probes) <= set(LINEARITY_PROBES) or len(set(probes)) < len(probes):
        fail("probes", probes, f"choose one or more of {', '.join(LINEARITY_PROBES)}")
    if settings.images is not None and settings.images <= 0:
        fail("images", settings.images, "use a positive number of images, or null for all")
    if settings.base != "previous":
        try:
            Step.parse(settings.base)
        except ValueError as err:
            fail("base", settings.base, f"use previous, or a snapshot's step: {err}")
    if settings.buffers not in BUFFER_CHOICES:
        fail("buffers", settings.buffers, f"choose {' or '.join(BUFFER_CHOICES)}")
    c = settings.classifier
    for key in ("epochs", "batch_size"):
        if getattr(c, key) <= 0:
            fail(f"classifier.{key}", getattr(c, key), "use a positive integer")
    if c.lr <= 0:
        fail("classifier.lr", c.lr, "use a positive learning rate such as 1e-3")
    if c.weight_decay < 0:
        fail("classifier.weight_decay", c.weight_decay, "use 0 or a positive value")
    if c.train_images is not None and c.train_images <= 0:
        fail("classifier.train_images", c.train_images, "use a positive number, or null for all")


def _unknown_key(node: Any, prefix: str = "") -> str | None:
    """The first key (dotted) that a `+key=value` override added outside the schema."""
    schema = OmegaConf.get_type(node)
    if is_dataclass(schema):
        known = {f.name for f in fields(schema)}
        for key in node:
            if key not in known:
                return f"{prefix}{key}"
    for key in node:
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            found = _unknown_key(child, f"{prefix}{key}.")
            if found:
                return found
    return None


def describe_keys(full_key: str) -> str:
    """The fix for a misspelled key: the keys that do exist where it was written."""
    parent, _, _ = full_key.rpartition(".")
    node: Any = OmegaConf.structured(RunConfig)
    node.model = OmegaConf.structured(ResNetConfig)
    for part in parent.split(".") if parent else []:
        node = node.get(part) if isinstance(node, DictConfig) else None
    if not isinstance(node, DictConfig):
        return "check its spelling"
    return f"check its spelling; keys under {parent or 'the top level'}: {', '.join(node)}"


def _check_step(key: str, text: str) -> None:
    try:
        Step.parse(text)
    except ValueError as err:
        raise ConfigError(f"{key}={text!r} is invalid: {err}") from None
