"""The report as one self-contained HTML page: figures embedded as base64 PNG data URIs, tables,
and every run's settings as given and resolved config in a collapsible <details>. Nothing is
loaded from elsewhere, so the file can be mailed, archived or opened offline and looks the same.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from vestige.report.grouping import Group, overrides_text

FIGURE_FORMATS = ("png", "pdf")  # each figure's files; the page embeds the PNG
SECTIONS = (
    "Runs",
    "Class selectivity",
    "Accuracy",
    "Ablation",
    "Linear regime",
    "Attention",
    "Robustness",
)
STYLE = """
body { font-family: sans-serif; max-width: 1400px; margin: 1em auto; padding: 0 1em;
       color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; }
figcaption { font-size: 0.9em; color: #555; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
caption { text-align: left; color: #555; padding-bottom: 0.3em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f6f6; padding: 0.5em; overflow-x: auto; font-size: 0.8em; }
summary { cursor: pointer; }
"""


@dataclass(frozen=True)
class RenderedFigure:
    name: str  # the files' stem
    section: str
    caption: str
    files: dict[str, bytes]  # FIGURE_FORMATS -> the figure in that format

    @property
    def png(self) -> bytes:
        return self.files["png"]


@dataclass(frozen=True)
class PageTable:
    section: str
    caption: str
    header: list[str]
    rows: list[list[str]]


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_html(figure: RenderedFigure) -> str:
    files = ", ".join(f"{figure.name}.{form}" for form in figure.files)
    return (
        f'<figure id="{escape(figure.name)}"><img src="{png_data_uri(figure.png)}" '
        f'alt="{escape(figure.caption)}"><figcaption>{escape(figure.caption)} '
        f"({escape(files)})</figcaption></figure>"
    )


def table_html(table: PageTable) -> str:
    def cell(text: str) -> str:
        kind = ' class="number"' if _is_number(text.split(" ")[0]) else ""
        return f"<td{kind}>{escape(text)}</td>"

    head = "".join(f"<th>{escape(h)}</th>" for h in table.header)
    body = "".join(f"<tr>{''.join(cell(c) for c in row)}</tr>" for row in table.rows)
    return (
        f"<table><caption>{escape(table.caption)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def configs_html(groups: Sequence[Group]) -> str:
    """Every run's settings as given (what differs from the defaults, as on the command line)
    and its config.yaml, folded, under the name of its group."""
    parts = []
    for group in groups:
        for run in group.runs:
            given = overrides_text(run.identity) or "(the defaults)"
            parts.append(
                f"<details><summary>{escape(run.name)} (seed {run.seed}, "
                f"{escape(group.name)})</summary><p>settings: <code>{escape(given)}</code></p>"
                f"<pre>{escape(run.config_text)}</pre></details>"
            )
    return "\n".join(parts)


def render_page(
    title: str,
    subtitle: str,
    groups: Sequence[Group],
    figures: Sequence[RenderedFigure],
    tables: Sequence[PageTable],
) -> str:
    """Sections in SECTIONS order (figures, then tables); a section without data is absent.
    The configs come last."""
    sections: dict[str, list[str]] = {}
    for figure in figures:
        sections.setdefault(figure.section, []).append(figure_html(figure))
    for table in tables:
        sections.setdefault(table.section, []).append(table_html(table))
    order = sorted(sections, key=lambda s: SECTIONS.index(s) if s in SECTIONS else len(SECTIONS))
    body = "\n".join(
        f"<section><h2>{escape(name)}</h2>\n" + "\n".join(sections[name]) + "\n</section>"
        for name in order
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{escape(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{escape(title)}</h1>
<p>{escape(subtitle)}</p>
{body}
<section><h2>Configs</h2>
{configs_html(groups)}
</section>
</body>
</html>
"""
