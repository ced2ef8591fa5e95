"""Rendering the report's blocks: markdown (images as links to ``plots/``) and a
self-contained HTML page (images embedded, each naming its PNG in ``data-file``); and
the plots' shared settings (:data:`DPI`, :data:`FONT`, :func:`save_figure`).

A block is (kind, content): a heading ("h1".."h3") or paragraph ("p") with
text, a "table" with rows of cells (a :class:`~pluralign.eval.report_table.Best`
cell is bold), or an "img" with the PNG's path.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pluralign.eval.report_table import Best

__all__ = ["DPI", "FONT", "STYLE", "Block", "pyplot", "render_html", "render_markdown",
           "save_figure"]

Block = tuple[str, Any]

#: Resolution of the saved plots: at 90 dpi the page showed them blurred.
DPI = 150
#: Font size (pt) of the plots' tick labels, legends and annotations: 6 pt was illegible.
FONT = 8


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Save ``fig`` to ``path`` at :data:`DPI` and close it."""
    # The figures lay themselves out (constrained layout) and keep their size, so the
    # PNG is exactly figsize x DPI pixels.
    fig.savefig(path, dpi=DPI)
    pyplot().close(fig)
    return path


def _md_cell(text: str) -> str:
    cell = text.replace("|", "\\|").replace("\n", " ")
    return f"**{cell}**" if isinstance(text, Best) else cell


def render_markdown(blocks: Sequence[Block], base: Path) -> str:
    """report.md: images linked relative to ``base`` (the report's folder)."""
    out = []
    for kind, content in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + content)
        elif kind == "p":
            out.append(content)
        elif kind == "table":
            header, *rows = content
            out.append("| " + " | ".join(map(_md_cell, header)) + " |")
            out.append("|" + "---|" * len(header))
            out += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in rows]
        elif kind == "img":
            out.append(f"![{content.stem}]({content.relative_to(base).as_posix()})")
        out.append("")
    return "\n".join(out)


#: A metric cell as :func:`~pluralign.eval.report_table.fmt` writes it: value, then interval.
_METRIC_CELL = re.compile(r"(\S+) (\[\S+, \S+\] \(n=\d+\))")


def _html_cell(text: str) -> str:
    metric = _METRIC_CELL.fullmatch(text)
    # A metric's interval goes on a line of its own, so the columns stay narrow and the
    # values line up; any other text (a response) is left as it is.
    cell = (f"{html.escape(metric[1])}<br><span class='ci'>{html.escape(metric[2])}</span>"
            if metric else html.escape(text))
    return f"<td><strong>{cell}</strong></td>" if isinstance(text, Best) else f"<td>{cell}</td>"


#: The page's style: as wide as two plot panels at DPI (1200 px), so plots are not scaled.
STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:auto;padding:0 12px}"
         ".ci{color:#555;font-size:12px;white-space:nowrap}"
         "table{border-collapse:collapse;font-size:13px;margin-bottom:6px}"
         "td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}"
         "th{background:#f3f3f3}strong{color:#000}img{max-width:100%;display:block}")


def render_html(blocks: Sequence[Block], base: Path | None = None) -> str:
    """The page; images embedded, each naming (``data-file``) its PNG relative to ``base``."""
    body = []
    for kind, content in blocks:
        if kind in ("h1", "h2", "h3", "p"):
            body.append(f"<{kind}>{html.escape(content)}</{kind}>")
        elif kind == "table":
            header, *rows = content
            cells = "".join(f"<th>{html.escape(c)}</th>" for c in header)
            trs = "".join("<tr>" + "".join(map(_html_cell, r)) + "</tr>" for r in rows)
            body.append(f"<table><tr>{cells}</tr>{trs}</table>")
        elif kind == "img":
            path = Path(content)
            name = path.relative_to(base).as_posix() if base is not None else path.name
            data = base64.b64encode(path.read_bytes()).decode()
            body.append(f'<img alt="{html.escape(path.stem)}" data-file="{html.escape(name)}" '
                        f'src="data:image/png;base64,{data}">')
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>pluralign evaluation"
            f"</title><style>{STYLE}</style></head><body>{''.join(body)}</body></html>")
