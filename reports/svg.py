"""Charts as server-rendered SVG (no script, no network): bars, a line, a heatmap.

Each function returns an `<svg>` element sized by its viewBox (it scales to its container), with a
<title> per mark so a hover shows the figure, and text a screen reader can read.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

W, H = 640, 240
PAD_L, PAD_R, PAD_T, PAD_B = 44, 12, 14, 30


def _svg(body: list[str], label: str, width: int = W, height: int = H) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}"'
        f' xmlns="http://www.w3.org/2000/svg">' + "".join(body) + "</svg>"
    )


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000):
        if value <= step * 4:
            return float(step * 4)
    return float(value)


def _grid(top: float, fmt: str = "{:g}") -> list[str]:
    out = []
    for i in range(5):
        v = top * i / 4
        y = H - PAD_B - (H - PAD_T - PAD_B) * i / 4
        out.append(f'<line class="grid" x1="{PAD_L}" y1="{y:.1f}" x2="{W - PAD_R}" y2="{y:.1f}"/>')
        out.append(
            f'<text class="axis" x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt.format(v)}</text>'
        )
    return out


def bars(labels: Sequence[str], values: Sequence[float], label: str) -> str:
    """Vertical bars, one per label (e.g. calls per hour of day)."""
    top = _nice_max(max(values, default=0))
    n = max(len(values), 1)
    slot = (W - PAD_L - PAD_R) / n
    body = [f"<title>{escape(label)}</title>", *_grid(top)]
    for i, (lab, v) in enumerate(zip(labels, values, strict=True)):
        h = (H - PAD_T - PAD_B) * (v / top)
        x = PAD_L + i * slot + slot * 0.15
        y = H - PAD_B - h
        body.append(
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" height="{h:.1f}">'
            f"<title>{escape(lab)}: {v:g}</title></rect>"
        )
        if n <= 24 and (n <= 12 or i % 3 == 0):
            body.append(
                f'<text class="axis" x="{x + slot * 0.35:.1f}" y="{H - PAD_B + 16}" text-anchor="middle">'
                f"{escape(lab)}</text>"
            )
    return _svg(body, label)


def line(labels: Sequence[str], values: Sequence[float | None], label: str, *, percent: bool = True) -> str:
    """A line over the labels (e.g. answer rate per day); a gap where a value is None."""
    top = 1.0 if percent else _nice_max(max((v for v in values if v is not None), default=0))
    n = len(values)
    step = (W - PAD_L - PAD_R) / max(n - 1, 1)
    body = [f"<title>{escape(label)}</title>", *_grid(top, "{:.0%}" if percent else "{:g}")]
    path: list[str] = []
    pen_up = True
    for i, v in enumerate(values):
        x = PAD_L + i * step if n > 1 else (W - PAD_L - PAD_R) / 2 + PAD_L
        if v is None:
            pen_up = True
            continue
        y = H - PAD_B - (H - PAD_T - PAD_B) * (v / top)
        path.append(f"{'M' if pen_up else 'L'}{x:.1f},{y:.1f}")
        pen_up = False
        shown = f"{v:.0%}" if percent else f"{v:g}"
        body.append(
            f'<circle class="dot" cx="{x:.1f}" cy="{y:.1f}" r="3"><title>{escape(labels[i])}: {shown}</title></circle>'
        )
    if path:
        body.insert(11, f'<path class="line" d="{" ".join(path)}"/>')
    every = max(1, n // 8)
    for i in range(0, n, every):
        x = PAD_L + i * step if n > 1 else (W - PAD_L - PAD_R) / 2 + PAD_L
        anchor = "end" if n > 1 and i == n - 1 else "middle"  # the last day's label stays inside
        body.append(
            f'<text class="axis" x="{x:.1f}" y="{H - PAD_B + 16}" text-anchor="{anchor}">{escape(labels[i][5:])}</text>'
        )
    return _svg(body, label)


def heatmap(rows: Sequence[str], cols: Sequence[str], values: Sequence[Sequence[float]], label: str) -> str:
    """A grid (e.g. weekday × hour) whose cells darken with their value (5 shades)."""
    cw, ch, left, top_pad = 24, 22, 40, 18
    width, height = left + cw * len(cols) + 4, top_pad + ch * len(rows) + 4
    peak = max((v for r in values for v in r), default=0) or 1
    body = [f"<title>{escape(label)}</title>"]
    for j, c in enumerate(cols):
        if j % 3 == 0:
            body.append(
                f'<text class="axis" x="{left + j * cw + cw / 2:.0f}" y="12" text-anchor="middle">{escape(c)}</text>'
            )
    for i, r in enumerate(rows):
        y = top_pad + i * ch
        body.append(f'<text class="axis" x="{left - 6}" y="{y + 15}" text-anchor="end">{escape(r)}</text>')
        for j, c in enumerate(cols):
            v = values[i][j]
            shade = 0 if v == 0 else 1 + min(4, int(4 * v / peak))
            body.append(
                f'<rect class="cell s{shade}" x="{left + j * cw}" y="{y}" width="{cw - 2}" height="{ch - 2}">'
                f"<title>{escape(r)} {escape(c)}:00 — {v:g}</title></rect>"
            )
    return _svg(body, label, width, height)
