"""Run every laptop command of docs/reproduction.md in order, and time each.

    .venv/bin/python scripts/reproduce_laptop.py [--outputs DIR] [--only claims windows ...]

Each step is the README's own command (vestige skips finished work, so a rerun only finishes
what is missing). Afterwards `<outputs>/reproduction/timings.md` (and `.csv`) holds one row per
step: its wall time, the load average before and after it, and its exit status, under a line
saying which machine measured them. Timings taken while other work shares the CPU are not the
machine's speed: the load averages say whether they were.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

SEEDS = (0, 1, 2)
RECOMPUTE = "analysis.bn_stats=recompute"


def steps(seeds: tuple[int, ...]) -> dict[str, list[tuple[str, list[str]]]]:
    """Each group of docs/reproduction.md: (name, vestige-run arguments) in the order to run."""
    claims: list[tuple[str, list[str]]] = []
    for s in seeds:
        claims.append((f"train seed {s}", ["experiment=selectivity_dynamics", f"seed={s}"]))
    for s in seeds:
        selectivity = ["experiment=selectivity_dynamics", "task=analyze", "analysis=selectivity"]
        ablation = ["experiment=ablation", "task=analyze", f"seed={s}"]
        linearity = ["experiment=linear_regime", "task=analyze", f"seed={s}"]
        claims += [
            (f"selectivity recompute seed {s}", [*selectivity, f"seed={s}", RECOMPUTE]),
            (f"ablation seed {s}", ablation),
            (f"ablation recompute seed {s}", [*ablation, RECOMPUTE]),
            (f"linearity seed {s}", linearity),
            (f"linearity recompute seed {s}", [*linearity, RECOMPUTE]),
        ]
    return {
        "claims": claims,
        "windows": [("regularization windows", ["-m", "experiment=regularization_windows"])],
        "sweep": [("selectivity sweep", ["-m", "experiment=selectivity_sweep"])],
        "convit": [
            ("convit vs deit", ["-m", "experiment=convit_vs_deit"]),
            ("convit vs deit attention", ["-m", "experiment=convit_vs_deit", "task=analyze"]),
        ],
    }


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    return (
        f"{platform.node()}: {model}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"with {torch.get_num_threads()} threads, {platform.system()} {platform.release()}"
    )


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outputs", type=Path, default=Path("."), help="where outputs/ goes")
    parser.add_argument("--only", nargs="+", choices=["claims", "windows", "sweep", "convit"])
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    args = parser.parse_args()
    groups = steps(tuple(args.seeds))
    chosen = [step for name in args.only or list(groups) for step in groups[name]]
    folder = args.outputs / "outputs" / "reproduction"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, overrides in chosen:
        before, started = load(), time.perf_counter()
        print(f"== {name}: vestige-run {' '.join(overrides)}", flush=True)
        command = [sys.executable, "-m", "vestige.run", *overrides, "trainer.progress=plain"]
        result = subprocess.run(command, cwd=args.outputs)
        seconds = time.perf_counter() - started
        rows.append(
            {
                "step": name,
                "command": "vestige-run " + " ".join(overrides),
                "seconds": round(seconds),
                "load before": before,
                "load after": load(),
                "exit": result.returncode,
            }
        )
    with open(folder / "timings.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"Measured on {machine()}, {time.strftime('%Y-%m-%d')}.", ""]
    lines += ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += [
        "| " + " | ".join(f"`{v}`" if k == "command" else str(v) for k, v in r.items()) + " |"
        for r in rows
    ]
    (folder / "timings.md").write_text("\n".join(lines) + "\n")
    print(f"timings: {folder / 'timings.md'}")
    sys.exit(max(row["exit"] for row in rows))


if __name__ == "__main__":
    main()
