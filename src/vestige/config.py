"""The typed config schema, registered in Hydra's ConfigStore: the ground floor every layer reads.

Every field a user can set lives in one of these dataclasses, so a misspelled key or a value of
the wrong type is caught by Hydra/OmegaConf while composing. Field metadata says what is not part
of a run's identity and what a fork may change (`setting`). The checks of values (ranges, paths,
known names) live beside the code that owns each section; tasks/checks.py runs them in order.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import MISSING as NO_DEFAULT
from dataclasses import dataclass, field, fields, is_dataclass
from types import MappingProxyType
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

TASKS = ("train", "analyze", "collect", "report", "list")


def setting(
    default: Any = NO_DEFAULT,
    *,
    factory: Callable[[], Any] | None = None,
    identity: bool = True,
    fork: bool = False,
    named: bool = False,
) -> Any:
    """A field with metadata: `identity=False` keeps it (a whole section, for a section) out of a
    run's identity; `fork=True` lets a fork change it; `named=True` puts it in the identity even
    at its default (a model's name, where two schemas' defaults would otherwise name two networks
    alike)."""
    metadata = {"identity": identity, "fork": fork, "named": named}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class ResNetConfig:
    """torchvision ResNet; `stem=small` is the 3x3/1 stem without max-pool for 28-64 px inputs."""

    name: str = "resnet18"
    stem: str = "small"
    width: float = 1.0  # multiplies every stage's channel count; 1.0 = torchvision's network
    zero_init_residual: bool = False


@dataclass
class CifarResNetConfig:
    """CIFAR ResNet-(6n+2) (He et al. 2016): resnet20 | resnet32 | resnet44 | resnet56."""

    name: str = setting("resnet20", named=True)  # always in a run's identity
    width: float = 1.0  # multiplies the 16/32/64 channels of the three stages
    # A: identity with zero-padded channels (parameter-free, 0.27M for ResNet-20);
    # B: 1x1 convolution and BatchNorm where the shape changes
    shortcut: str = "A"


@dataclass
class VGGConfig:
    """VGG-16 for small images (models/vgg.py): vgg16, or vgg16_bn with BatchNorm."""

    name: str = setting("vgg16", named=True)  # always in a run's identity
    width: float = 1.0  # multiplies every convolution's channels and the classifier's width
    batch_norm: bool = False  # BatchNorm after each convolution
    # torchvision: 7x7 pool, 25088-4096-4096-classes (Ranadive et al.'s); small: 512-512-classes
    classifier: str = "torchvision"
    dropout: float = 0.5  # before the classifier's second and third linear layers


@dataclass
class ConViTConfig:
    """ConViT / DeiT (docs/science.md §11); DeiT is `local_up_to_layer=0` with qkv bias."""

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
class TCNNConfig(ResNetConfig):
    """A Transformed CNN (docs/science.md §16): the ResNet `base` (with the inherited stem, width
    and init) whose 3x3 convolutions in `stages` become gated positional self-attention that
    computes the same function at conversion (models/tcnn.py). With `init.from` the ResNet is
    a snapshot of another run; without, the hybrid starts from the ResNet's random init."""

    name: str = setting("tcnn", named=True)  # always in a run's identity
    base: str = "resnet18"  # the ResNet converted: resnet18 | resnet34 | resnet50
    converted_stages: list[str] = field(default_factory=lambda: ["layer4"])
    # the positional attention's sharpness alpha (ConViT's locality strength): large enough that
    # each head attends to its kernel offset alone (relative error < 1e-4 at conversion)
    locality_strength: float = 20.0
    # lambda of each head's gate sigmoid(lambda): 1 = positional; large enough that content
    # attention starts without influence, small enough that fine-tuning can open the gate
    # (12: logits within 2e-5 of the ResNet's; 10 gives 1.4e-4, over the 1e-4 tolerance)
    gate: float = 12.0


@dataclass
class SyntheticConfig:
    """The built-in dataset: class prototypes seen through shared distractors and noise,
    generated from the seed, no files (data/synthetic.py). These defaults are the first
    version's (prototypes and noise only, saturating fast); conf/data/synthetic.yaml sets the
    harder task the default run uses."""

    train_size: int = 2000
    eval_size: int = 500
    noise: float = 0.6
    prototype_seed: int = 1234
    prototype_scale: float = 1.0  # amplitude of the class signal
    distractors: int = 0  # smooth patterns shared by every class (0: none)
    distractor_scale: float = 0.0  # amplitude of each image's mix of them


@dataclass
class DataConfig:
    name: str = "synthetic"
    root: str | None = setting(None, identity=False)
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
    num_workers: int = setting(0, identity=False)
    # folder datasets: decode JPEGs per item with PIL in the workers (cpu), or read their bytes
    # there and decode, crop and resize in batches on the run's device (gpu: data/encoded.py)
    decode: str = "cpu"
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
    epochs: int = setting(3, fork=True)
    batch_size: int = 64  # global batch: each rank gets batch_size / world_size
    eval_batch_size: int = setting(256, identity=False)
    label_smoothing: float = 0.0
    grad_accum: int = 1
    sync_batchnorm: bool = False  # under DDP on CUDA: BatchNorm statistics over the global batch
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | bf16 | fp32
    channels_last: str = "auto"  # auto (on CUDA) | "true" | "false"
    deterministic: bool = False
    # torch.compile of the training step's forward and backward: off, or a torch.compile mode
    # (default | reduce-overhead | max-autotune | max-autotune-no-cudagraphs); evaluations and
    # measurements run the eager network, whose hooks see real module outputs
    compile: str = setting("off", identity=False)
    # auto (rich on a TTY, plain lines otherwise) | rich | plain | none
    progress: str = setting("auto", identity=False)
    log_every: int = setting(20, identity=False)  # plain progress line every N steps
    max_steps: int | None = setting(None, fork=True)  # stop early (benchmarks, smoke tests)


@dataclass
class CheckpointConfig:
    # snapshot specs: "0it", "every 1ep", "every 50it until 2ep", "log 8 from 1it to 3ep"
    snapshots: list[str] = field(default_factory=lambda: ["0it", "every 1ep"])
    # a resume state every this many steps ("500it", "1ep"; null: none), besides the final step,
    # the forkable steps and a stop; the default keeps its cost under 1% (docs/outputs.md)
    resume_every: str | None = setting("500it", identity=False)
    # full training states kept for good at these steps (same rules as snapshots), so that
    # forks can start there: e.g. ["5ep"] or ["every 1ep until 10ep"]
    forkable: list[str] = field(default_factory=list)
    keep_resume: int = 2
    # snapshots and resume states being written in the background at once, each a copy in host
    # memory; training waits for a free one (train/writer.py)
    pending_writes: int = setting(2, identity=False)


@dataclass
class SelectivityConfig:
    """How class selectivity is measured (docs/science.md §2)."""

    enabled: bool = True
    units: str = "block_output"  # block_output | all_relu
    eps: float = 1e-6
    # ViT MLP units: GELU outputs can be slightly negative (docs/science.md §15);
    # keep them, clamp them at 0, or take absolute values before averaging over tokens
    # (a no-op after ReLU, so clamp is the default for every architecture)
    negative: str = "clamp"  # keep | clamp | abs
    # the measurement pass: fp32 (TF32 off) whatever the training precision, or bf16 autocast
    precision: str = "fp32"  # fp32 | bf16


@dataclass
class RegularizerConfig:
    """A term added to the loss: loss = CE - alpha * R (docs/science.md §3)."""

    name: str = "none"  # none | selectivity
    # a float, or windows [{from: 0ep, until: 5ep, alpha: 0.0}, {from: 5ep, alpha: -20.0}]
    alpha: Any = 0.0
    stages: list[str] | None = None  # null: every stage but the last, as in Ranadive et al.
    eps: float = 1e-6
    sync: bool = True  # under DDP, R from the global batch's class sums (not each rank's)


@dataclass
class AblationConfig:
    """analysis=ablation: which block-output units are silenced, how, and what they are compared
    with (docs/science.md §4)."""

    # the work only, not the numbers: neither names the results folder
    stages: list[str] | None = setting(None, identity=False)  # null: every stage, one at a time
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
    # ablations run as one batched forward (speed and memory only)
    masks_per_forward: int = setting(1, identity=False)


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
    (docs/science.md §5, unconfirmed which one the paper used)."""

    probes: list[str] = field(default_factory=lambda: list(LINEARITY_PROBES))
    images: int | None = None  # the first N images of the eval split (one fixed set); null: all
    # each snapshot is paired with (linearised around, ReLU states compared with): `previous`,
    # the chosen snapshot before it; or one fixed snapshot by its step, e.g. 0it
    base: str = "previous"
    # BatchNorm running statistics in the expansion: expand (with the weights) | base (kept at
    # the base snapshot's values), see vestige.analysis.linearity.linearized
    buffers: str = "expand"
    classifier: LinearClassifierConfig = field(default_factory=LinearClassifierConfig)


@dataclass
class AttentionConfig:
    """analysis=attention: how a block that carries the class token is compared with one that
    does not (docs/science.md §14)."""

    # renormalise: each patch's attention over patches rescaled to sum to 1, as in a GPSA block;
    # zero: the share a patch puts on the class token counts as distance 0
    class_token: str = "renormalise"  # renormalise | zero


@dataclass
class RobustnessConfig:
    """analysis=robustness: accuracy under corruptions and attacks, and the dimensionality of the
    representation change a perturbation causes (docs/science.md §7). Every setting changes the
    numbers: results measured with other settings go to a folder of their own."""

    # corruptions (Hendrycks & Dietterich 2019) on the first N eval images (null: all of them),
    # each image's random draws seeded by (seed, corruption, its index): the same at every snapshot
    images: int | None = None
    corruptions: list[str] | None = None  # null: all 15
    severities: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    seed: int = 0
    # attacks in pixel space ([0, 1], eval mode) on the first attack_images eval images
    attacks: list[str] = field(default_factory=lambda: ["fgsm", "pgd"])  # fgsm | pgd
    norm: str = "linf"  # linf | l2 (give L2 radii in epsilons)
    epsilons: list[float] = field(default_factory=lambda: [k / 255 for k in (1, 2, 4, 8)])
    steps: int = 10  # PGD
    step_size: float | None = None  # PGD; null: 2.5 epsilon / steps (Madry et al. 2018)
    random_start: bool = True  # PGD
    attack_images: int | None = 1000
    # the representation change: block outputs of each stage's last block on perturbed minus
    # clean images, over the first change_images eval images; the perturbation is an attack
    # (at change_epsilon) or a corruption (at change_severity)
    change: str = "pgd"
    change_epsilon: float = 4 / 255
    change_severity: int = 3
    change_images: int = 500
    change_stages: list[str] | None = None  # null: every stage


@dataclass
class AnalysisConfig:
    """task=analyze: which analysis, over which snapshots of `run`."""

    name: str = "selectivity"
    snapshots: list[str] | None = None  # snapshot rules as in checkpoint.snapshots; null: all
    batch_size: int = 256
    # analysis=attention only: images averaged for nonlocality (docs/science.md §14); the
    # linearity probes take analysis.linearity.images
    images: int = 1024
    # BatchNorm running statistics of each snapshot as stored (running), or re-estimated on
    # bn_images training images before measuring (recompute; analysis/batchnorm.py)
    bn_stats: str = "running"  # running | recompute
    bn_images: int = 1000
    # a damaged or missing snapshot stops the analysis in one line; true: skipped with a warning
    skip_damaged: bool = False
    ablation: AblationConfig = field(default_factory=AblationConfig)
    linearity: LinearityConfig = field(default_factory=LinearityConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    robustness: RobustnessConfig = field(default_factory=RobustnessConfig)


@dataclass
class ReportConfig:
    """task=report: where the page and its figures go, the page's title, how figures look."""

    out: str | None = None  # null: <run>/report for one run, <outputs>/reports/<hash> for several
    title: str | None = None  # null: the run's name, or how many runs and conditions
    # screen: sized for the page; paper: a paper's column (3.5 in wide, 8-9 pt text)
    style: str = "screen"


TRACKERS = ("tensorboard", "mlflow", "wandb")


@dataclass
class TensorBoardConfig:
    """logger=tensorboard: event files, a folder per run, in its sweep's folder for a point."""

    enabled: bool = False
    log_dir: str | None = None  # null: <outputs>/tensorboard


@dataclass
class MLflowConfig:
    """logger=mlflow: one MLflow run per run directory; a sweep's points share an experiment."""

    enabled: bool = False
    # null: $MLFLOW_TRACKING_URI if set, else the local store sqlite:///<outputs>/mlflow/mlflow.db
    tracking_uri: str | None = None
    experiment: str | None = None  # null: the sweep's name for a point of a sweep, else vestige


@dataclass
class WandbConfig:
    """logger=wandb: one W&B run per run directory, a sweep's points in one group."""

    enabled: bool = False
    mode: str = "offline"  # offline (no account, no network; `wandb sync` uploads) | online
    project: str = "vestige"
    entity: str | None = None
    dir: str | None = None  # null: <outputs>; W&B writes its files in <dir>/wandb/


@dataclass
class LoggerConfig:
    """The experiment trackers every metrics row also goes to (vestige/tracking/); none chosen
    by default, metrics.jsonl being the record."""

    tensorboard: TensorBoardConfig = field(default_factory=TensorBoardConfig)
    mlflow: MLflowConfig = field(default_factory=MLflowConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class RunConfig:
    """One command: a run's settings (which name its directory) and how this command treats it.

    Field metadata marks what is not part of a run's identity (how a run is carried out, shown
    or analysed, never what its training computes) and what a fork may change (train/fork.py).
    """

    task: str = setting("train", identity=False)  # train | analyze | collect | report | list
    seed: int = 0
    device: str = setting("auto", identity=False)  # auto | cpu | cuda | cuda:N
    outputs: str = setting("outputs", identity=False)
    run: str | None = setting(None, identity=False)  # analyze/report: the run directory to use
    sweep: str | None = setting(None, identity=False)  # collect/report/list: a sweep directory
    # a resubmitted sweep skips the points that failed for a reason that would recur (a config
    # error, a diverged training); true runs them again
    retry_failed: bool = setting(False, identity=False)
    runs: list[str] | None = setting(None, identity=False)  # report: several run directories
    model: Any = MISSING
    data: DataConfig = setting(factory=DataConfig)
    optim: OptimConfig = setting(factory=OptimConfig)
    sched: SchedConfig = setting(factory=SchedConfig)
    trainer: TrainerConfig = setting(factory=TrainerConfig)
    checkpoint: CheckpointConfig = setting(factory=CheckpointConfig, fork=True)
    selectivity: SelectivityConfig = setting(factory=SelectivityConfig, fork=True)
    regularizer: RegularizerConfig = setting(factory=RegularizerConfig, fork=True)
    analysis: AnalysisConfig | None = setting(None, identity=False)
    report: ReportConfig = setting(factory=ReportConfig, identity=False)
    logger: LoggerConfig = setting(factory=LoggerConfig, identity=False)  # conf/logger/
    # start from another run's full state: fork.from=<run dir> fork.at=5ep (see train/fork.py)
    fork: dict[str, str | None] = setting(factory=lambda: {"from": None, "at": None}, fork=True)
    # start the model (weights only) from another run's snapshot: init.from=<run dir> init.at=5ep;
    # a fresh optimiser and schedule (train/initialization.py). model=tcnn converts it first.
    init: dict[str, str | None] = setting(factory=lambda: {"from": None, "at": None})


def register_configs() -> None:
    """Make the schema known to Hydra: `config.yaml` and each group file extend these nodes.
    They are stored outside the groups (a group file names one as `/resnet_schema@_here_`), so
    that `--help` and shell completion offer only the choices a user has."""
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(name="resnet_schema", node=ResNetConfig)
    cs.store(name="convit_schema", node=ConViTConfig)
    cs.store(name="cifar_resnet_schema", node=CifarResNetConfig)
    cs.store(name="vgg_schema", node=VGGConfig)
    cs.store(name="tcnn_schema", node=TCNNConfig)
    cs.store(name="analysis_schema", node=AnalysisConfig)


MODEL_SCHEMAS = (ResNetConfig, ConViTConfig, TCNNConfig, CifarResNetConfig, VGGConfig)
# What `RunConfig.model` holds: one of the model schemas (OmegaConf has no unions of structured
# configs, so the field itself is `Any`; code that reads a model section takes this type).
ModelConfig = ResNetConfig | ConViTConfig | TCNNConfig | CifarResNetConfig | VGGConfig


def model_schema(model: Mapping[str, Any]) -> type | None:
    """The schema of a model section, known by its keys (a saved config names no schema); None
    when the keys are no schema's."""
    keys = set(model)
    for schema in MODEL_SCHEMAS:
        if {f.name for f in fields(schema)} == keys:
            return schema
    return None


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`; lists and other values are leaves."""
    if isinstance(tree, Mapping):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: tree}


@functools.cache
def defaults(schema: type) -> Mapping[str, Any]:
    """A schema's default values, flattened (a missing model section left out); read-only."""
    tree = OmegaConf.to_container(OmegaConf.structured(schema))
    return MappingProxyType({k: v for k, v in flatten(tree).items() if v != MISSING})


def named_defaults(schema: type) -> dict[str, Any]:
    """A model schema's defaults without the fields marked `named`, which a run's identity
    keeps even at their default."""
    named = {spec.name for spec in fields(schema) if spec.metadata.get("named")}
    return {key: value for key, value in defaults(schema).items() if key not in named}


@functools.cache
def _marked(schema: type, flag: str, value: bool, prefix: str = "") -> frozenset[str]:
    """Dotted keys (whole sections included) whose metadata `flag` is `value`."""
    found = set()
    for spec in fields(schema):
        key = prefix + spec.name
        if spec.metadata.get(flag, flag == "identity") == value:
            found.add(key)
        elif spec.default_factory is not NO_DEFAULT and is_dataclass(spec.default_factory):
            found |= _marked(spec.default_factory, flag, value, f"{key}.")
    return frozenset(found)


def _within(key: str, sections: frozenset[str]) -> bool:
    """Whether `key` or one of the sections it lies in is among `sections`."""
    parts = key.split(".")
    return any(".".join(parts[:n]) in sections for n in range(1, len(parts) + 1))


def in_identity(key: str, schema: type | None = None) -> bool:
    """Whether a dotted key is part of the identity of a config of `schema` (default: a run)."""
    return not _within(key, _marked(schema or RunConfig, "identity", False))


def fork_may_change(key: str) -> bool:
    """Whether a fork may differ from its parent in this key (train/fork.py)."""
    return _within(key, _marked(RunConfig, "fork", True)) or not in_identity(key)


def identity_settings(
    flat: Mapping[str, Any], schema: type, schema_defaults: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The settings of `flat` that are part of the identity and differ from the defaults, sorted:
    what names a run's directory (rundir.py) or an analysis's results folder."""
    known = defaults(schema) if schema_defaults is None else schema_defaults
    return {
        key: value
        for key, value in sorted(flat.items())
        if in_identity(key, schema) and (key not in known or known[key] != value)
    }


def unknown_key(node: Any, prefix: str = "") -> str | None:
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
            found = unknown_key(child, f"{prefix}{key}.")
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
