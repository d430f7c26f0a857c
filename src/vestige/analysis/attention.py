"""`analysis=attention`: how positional and how local every head of a ConViT, DeiT or T-CNN is, at
every snapshot of a run (docs/science.md §14, §16).

Per snapshot, in `attention/step_N.npz`:
    gates                  (GPSA layers, heads) sigmoid(lambda_h): 1 = positional, 0 = content
    nonlocality            (layers, heads) attention-weighted patch distance, see `nonlocality`
    class_token_attention  (layers, heads) mean attention of patch queries on the class token
    offsets                (GPSA layers, heads, 2) centre (d_x, d_y) of each head's positional
                           attention, see `head_offsets`
    layers, gpsa_layers    index of each row's layer (see `layer_indices`); step, epoch, images
Per run, rebuilt by `finish`: `gates.csv`, `nonlocality.csv` (step, epoch, layer, head, value);
the task draws them as `gates.png`, `nonlocality.png` (report/run_figures.py).

A layer that carries the class token is measured over its patch-to-patch block, rows renormalised
to sum to 1 (`analysis.attention.class_token=renormalise`, the default), or as it is (`zero`, in
`attention-zero/`); each step file records which.

Nonlocality is measured on each layer's real input: the maps are those recorded during ordinary
forwards of the first `analysis.images` images of the evaluation split (fewer if it is smaller),
not raw patch embeddings fed to every layer (the bug §6 warns about).

A T-CNN's converted layers (models/tcnn.py) attend from the output positions (strided in a
stride-2 block) to the zero-padded input's positions, in pixels of their input; they record those
distances, and nonlocality counts attention on a padding key at its distance, where the
convolution reads its zero. At conversion each head is then exactly as far as its kernel offset.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from vestige.analysis.base import AnalysisContext
from vestige.config import CLASS_TOKEN_CHOICES, RunConfig
from vestige.errors import ConfigError, invalid
from vestige.io import (
    atomic_write_bytes,
    atomic_write_text,
    settings_folder,
    step_file,
    step_files,
    table_text,
)
from vestige.models import TRANSFORMED
from vestige.models.convit import VARIANTS
from vestige.models.gpsa import recording_attention, relative_offsets
from vestige.results import Run, Snapshot

NONLOCALITY_IMAGES = 1024  # the paper's batch for nonlocality (§6)
# the per-run tables: (key in the step files, value column, the key of its layers' indices)
TABLES = (("gates", "gate", "gpsa_layers"), ("nonlocality", "nonlocality", "layers"))


def patch_distances(side: int, device: torch.device | str | None = None) -> Tensor:
    """||d_ij|| between the patches of a side x side grid, in patch units, (L, L)."""
    return relative_offsets(side, device)[..., 0].sqrt()


def nonlocality(
    attention: Tensor, class_token: str = "renormalise", distances: Tensor | None = None
) -> Tensor:
    """(1/L) sum_ij A_ij ||d_ij|| per image and head, (B, H), of (B, H, L, L) patch attention,
    L the number of queries; `distances` ||d_ij|| (queries, keys) where queries and keys are not
    one square grid (a T-CNN layer's), else the square grid's.

    docs/science.md §14. In a layer that carries a class token, the patch-to-patch block's rows
    sum to less than 1: `renormalise` (the default) rescales each row to sum to 1, so the layer is
    measured like a GPSA layer, which never sees the class token; `zero` uses the block as it is,
    so the share a patch puts on the class token counts as distance 0, which lowers DeiT's
    nonlocality against ConViT's (`class_token_attention` records that share). Rows of a layer
    without a class token already sum to 1: both give the same.
    """
    if class_token == "renormalise":
        attention = attention / attention.sum(dim=-1, keepdim=True).clamp(min=1e-12)
    if distances is None:
        distances = patch_distances(math.isqrt(attention.shape[-1]), attention.device)
    distances = distances.to(attention.dtype)
    return torch.einsum("bhij,ij->bh", attention, distances) / attention.shape[-2]


def head_offsets(positional: Tensor, relative: Tensor | None = None) -> Tensor:
    """Each head's centre (d_x, d_y), (H, 2): the centre of mass of its positional attention for
    the query at the middle of the grid; for a layer with its own encodings `relative` (a
    T-CNN's), averaged over its queries, which all see a full neighbourhood thanks to the padding
    keys, so that at conversion it is each head's kernel offset.

    At the local init this is the head's conv offset (§2). It is read off the attention rather than
    the positional weights (delta = -(w_x, w_y) / 2 w_{||d||^2}) because that formula only holds
    while the quadratic weight stays negative, which training need not keep. A head spread wider
    than the grid has its centre pulled towards the query by the borders.
    """
    if relative is not None:
        centres = torch.einsum("hij,ijc->hc", positional[0], relative[..., 1:].to(positional.dtype))
        return centres / positional.shape[-2]
    side = math.isqrt(positional.shape[-1])
    query = (side // 2) * side + side // 2
    offsets = relative_offsets(side, positional.device)[query, :, 1:]
    return positional[0, :, query] @ offsets.to(positional.dtype)


@dataclass
class AttentionSummary:
    """One snapshot's attention measurements (numpy, on the CPU)."""

    layers: np.ndarray  # (layers,) index of each nonlocality row's layer (`layer_indices`)
    gpsa_layers: np.ndarray  # (GPSA layers,) index of each gate row's layer
    gates: np.ndarray  # (GPSA layers, heads)
    nonlocality: np.ndarray  # (layers, heads)
    class_token_attention: np.ndarray  # (layers, heads)
    offsets: np.ndarray  # (GPSA layers, heads, 2)
    images: int


@torch.no_grad()
def measure_attention(
    model: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    device: torch.device,
    images: int = NONLOCALITY_IMAGES,
    class_token: str = "renormalise",
) -> AttentionSummary:
    """Gates, offsets and nonlocality averaged over the first `images` images of `loader`;
    `class_token` as in `nonlocality`. Gates are sigmoid(lambda) of the layers with positional
    attention (ConViT's GPSA, a T-CNN's converted convolutions), in forward order.

    Eval mode (the model's mode is restored); sums stay on the device, only the per-layer (heads,)
    means come back.
    """
    was_training = model.training
    model.eval()
    names: list[str] = []
    nonlocal_sum: dict[str, Tensor] = {}
    class_sum: dict[str, Tensor] = {}
    offsets: dict[str, Tensor] = {}
    gates: dict[str, Tensor] = {}
    heads = 0
    seen = 0
    with recording_attention(model) as maps:
        for inputs, _ in loader:
            inputs = inputs[: images - seen].to(device)
            model(inputs)
            names = list(maps)
            for name, record in maps.items():
                block = model.get_submodule(name.rpartition(".")[0])
                lead = int(getattr(block, "class_token", False))
                patches = record.attention[:, :, lead:]
                heads = patches.shape[1]
                distances = None if record.relative is None else record.relative[..., 0].sqrt()
                local = nonlocality(patches[..., lead:], class_token, distances).sum(
                    dim=0, dtype=torch.float64
                )
                to_class = patches[..., :lead].sum(dim=(-1, -2)).sum(dim=0, dtype=torch.float64)
                nonlocal_sum[name] = nonlocal_sum.get(name, 0) + local
                class_sum[name] = class_sum.get(name, 0) + to_class / patches.shape[-2]
                if record.positional is not None:
                    offsets[name] = head_offsets(record.positional, record.relative)
                    gates[name] = model.get_submodule(name).gates().detach()
            seen += len(inputs)
            if seen >= images:
                break
    model.train(was_training)
    if not seen:
        raise ConfigError("analysis=attention needs evaluation images: the eval split is empty")
    index = layer_indices(names)
    return AttentionSummary(
        layers=np.array([index[name] for name in names]),
        gpsa_layers=np.array([index[name] for name in offsets]),
        gates=_stack(list(gates.values())).reshape(len(gates), heads),
        nonlocality=_stack([nonlocal_sum[name] / seen for name in names]),
        class_token_attention=_stack([class_sum[name] / seen for name in names]),
        offsets=_stack(list(offsets.values())).reshape(len(offsets), heads, 2),
        images=seen,
    )


def attention_folder(run_path: Path, class_token: str = "renormalise") -> Path:
    """`attention/`, or `attention-zero/` for nonlocality with `class_token=zero`."""
    other = class_token if class_token != "renormalise" else ""
    return settings_folder(run_path, "attention", other)


def layer_indices(names: list[str]) -> dict[str, int]:
    """The row index of each recorded layer: a ConViT's or DeiT's block (`blocks.3.attn` -> 3),
    so that its GPSA and plain layers line up by depth; a T-CNN's converted convolutions
    (`layer4.0.conv1`, ...) numbered 0, 1, ... in forward order."""
    if all(name.startswith("blocks.") for name in names):
        return {name: int(name.split(".")[-2]) for name in names}
    return {name: order for order, name in enumerate(names)}


def _stack(rows: list[Tensor]) -> np.ndarray:
    return torch.stack(rows).float().cpu().numpy() if rows else np.zeros((0, 0), np.float32)


class AttentionAnalysis:
    @staticmethod
    def check(cfg: RunConfig, run: Run) -> None:
        model = run.config.model.name
        if model not in VARIANTS and model != TRANSFORMED:
            raise ConfigError(
                f"analysis=attention needs a ConViT, DeiT or T-CNN run; {run.path.name} is {model}"
            )
        choice = cfg.analysis.attention.class_token
        if choice not in CLASS_TOKEN_CHOICES:
            fix = f"choose {' or '.join(CLASS_TOKEN_CHOICES)}"
            raise invalid("analysis.attention.class_token", choice, fix)

    def __init__(self, ctx: AnalysisContext) -> None:
        self.ctx = ctx
        self.class_token = ctx.cfg.analysis.attention.class_token
        self.folder = attention_folder(ctx.run.path, self.class_token)

    def done_steps(self) -> set[int]:
        return set(self._steps())

    def _steps(self) -> list[int]:
        return step_files(self.folder, ".npz")

    def analyze(self, snapshot: Snapshot, model: nn.Module) -> dict[str, float]:
        summary = measure_attention(
            model,
            self.ctx.eval_loader,
            self.ctx.device,
            self.ctx.cfg.analysis.images,
            self.class_token,
        )
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            step=np.int64(snapshot.step),
            epoch=np.float64(snapshot.epoch),
            class_token=np.str_(self.class_token),
            **{key: np.asarray(value) for key, value in summary.__dict__.items()},
        )
        atomic_write_bytes(step_file(self.folder, snapshot.step, ".npz"), buffer.getvalue())
        numbers = {"nonlocality/mean": float(summary.nonlocality.mean())}
        if summary.gates.size:
            numbers["gate/mean"] = float(summary.gates.mean())
        return numbers

    def finish(self) -> None:
        snapshots = [self._load(step) for step in self._steps()]
        if not snapshots:
            return
        for key, column, layers in TABLES:
            rows = [
                {
                    "step": int(s["step"]),
                    "epoch": float(s["epoch"]),
                    "layer": int(layer),
                    "head": head,
                    column: float(value),
                }
                for s in snapshots
                for layer, values in zip(s[layers], s[key], strict=True)
                for head, value in enumerate(values)
            ]
            columns = ("step", "epoch", "layer", "head", column)
            atomic_write_text(self.folder / f"{key}.csv", table_text(rows, columns, digits=6))

    def _load(self, step: int) -> dict[str, np.ndarray]:
        with np.load(step_file(self.folder, step, ".npz")) as data:
            return {key: data[key] for key in data.files}
