"""Analyses of a finished (or running) run's snapshots: `vestige-run task=analyze run=DIR
analysis=NAME`. Each analysis measures one snapshot at a time and skips the ones already done."""

from __future__ import annotations

from vestige.analysis.ablation import AblationAnalysis
from vestige.analysis.attention import AttentionAnalysis
from vestige.analysis.base import Analysis
from vestige.analysis.linearity import LinearityAnalysis
from vestige.analysis.robustness import RobustnessAnalysis
from vestige.analysis.selectivity import SelectivityAnalysis

ANALYSES: dict[str, type[Analysis]] = {
    "ablation": AblationAnalysis,
    "attention": AttentionAnalysis,
    "linearity": LinearityAnalysis,
    "robustness": RobustnessAnalysis,
    "selectivity": SelectivityAnalysis,
}

__all__ = ["ANALYSES", "Analysis"]
