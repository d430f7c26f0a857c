"""task=report: read the runs, group their seeds, draw every figure that has data in the chosen
style, and write each as PNG and PDF and index.html into the report folder (each file atomically,
the page last)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import vestige
from vestige.config import RunConfig
from vestige.io import atomic_write_bytes, atomic_write_text
from vestige.report.figures import FIGURES, spread_caption
from vestige.report.grouping import Group, group_by_seed
from vestige.report.inputs import report_folder, report_runs
from vestige.report.page import FIGURE_FORMATS, RenderedFigure, render_page
from vestige.report.plotting import SCREEN, Style, figure_bytes, figure_style
from vestige.report.summaries import ablation_auc_table, robustness_table, runs_table
from vestige.report.tables import load_record


def render_figures(groups: list[Group], style: Style = SCREEN) -> list[RenderedFigure]:
    """Every figure of FIGURES whose data some run has, as PNG and PDF bytes, its caption
    saying what its band is."""
    rendered = []
    for spec in FIGURES:
        figure = spec.draw(groups, style)
        if figure is not None:
            spread = "" if spec.spread is None else f" {spread_caption(groups, spec.spread)}"
            caption = spec.caption + spread
            files = {form: figure_bytes(figure, form) for form in FIGURE_FORMATS}
            rendered.append(RenderedFigure(spec.name, spec.section, caption, files))
    return rendered


def default_title(groups: list[Group]) -> str:
    runs = [run for group in groups for run in group.runs]
    if len(runs) == 1:
        return runs[0].name
    return f"{len(runs)} runs, {len(groups)} condition{'s' * (len(groups) > 1)}"


def build_report(cfg: RunConfig) -> Path:
    """Write the report of the runs `cfg` names; returns the page's path."""
    runs = report_runs(cfg)
    records = [load_record(path, cfg.get("analysis")) for path in runs]
    groups = group_by_seed(records)
    out = report_folder(cfg, runs)
    figures = render_figures(groups, figure_style(cfg.report.style))
    for figure in figures:
        for form, data in figure.files.items():
            atomic_write_bytes(out / f"{figure.name}.{form}", data)
    drawn = {figure.name for figure in figures}
    for stale in (spec.name for spec in FIGURES if spec.name not in drawn):
        for form in FIGURE_FORMATS:
            (out / f"{stale}.{form}").unlink(missing_ok=True)
    found = (ablation_auc_table(groups), robustness_table(groups))
    tables = [runs_table(groups), *(table for table in found if table is not None)]
    where = os.path.commonpath([record.path.parent for record in records])
    written = (
        f"Written {time.strftime('%Y-%m-%d %H:%M')} by vestige {vestige.__version__} from "
        f"{len(records)} run director{'ies' if len(records) > 1 else 'y'} in {where}."
    )
    page = render_page(cfg.report.title or default_title(groups), written, groups, figures, tables)
    atomic_write_text(out / "index.html", page)
    return out / "index.html"
