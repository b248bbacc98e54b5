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


def line(
    labels: Sequence[str],
    values: Sequence[float | None],
    label: str,
    *,
    percent: bool = True,
    ticks: Sequence[str] | None = None,
    show_values: bool = False,
) -> str:
    """A line over the labels (e.g. answer rate per day); a gap where a value is None. `ticks` are
    the axis texts (default: each label from its 6th character, the day of a date); `show_values`
    writes each value over its point (for print)."""
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
        if show_values:
            body.append(
                f'<text class="value" x="{x:.1f}" y="{y - 7:.1f}" text-anchor="{_anchor(i, n, ticks)}">{shown}</text>'
            )
    if path:
        body.insert(11, f'<path class="line" d="{" ".join(path)}"/>')
    every = max(1, n // 8)
    for i in range(0, n, every):
        x = PAD_L + i * step if n > 1 else (W - PAD_L - PAD_R) / 2 + PAD_L
        # the last label stays inside the chart (and longer ticks start at the first point)
        anchor = "end" if n > 1 and i == n - 1 else _anchor(i, n, ticks)
        body.append(
            f'<text class="axis" x="{x:.1f}" y="{H - PAD_B + 16}" text-anchor="{anchor}">'
            f"{escape(ticks[i] if ticks is not None else labels[i][5:])}</text>"
        )
    return _svg(body, label)


def _anchor(i: int, n: int, ticks: Sequence[str] | None) -> str:
    """Given ticks (longer texts) start at the first point and end at the last, inside the chart."""
    if ticks is None or n < 2:
        return "middle"
    return "start" if i == 0 else "end" if i == n - 1 else "middle"


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


def pareto(labels: Sequence[str], counts: Sequence[int], label: str, *, total: int | None = None) -> str:
    """A Pareto chart: bars of counts, most first, on the left axis; the cumulative share (of `total`,
    default the counts' sum) as a line on the right axis (0-100%), with the 80% mark dashed (the few
    reasons that make most of them)."""
    order = sorted(range(len(counts)), key=lambda i: (-counts[i], labels[i]))
    labs = [labels[i] for i in order]
    vals = [counts[i] for i in order]
    total = total or sum(vals) or 1
    n = max(len(vals), 1)
    width, pad_r = W, 44
    slot = (width - PAD_L - pad_r) / n
    longest = max((len(s) for s in labs), default=0)
    tilt = longest * 6.2 > slot - 4  # labels that would overlap are set at an angle
    pad_b = PAD_B if not tilt else min(110, 18 + int(min(longest, 24) * 4.6))
    # a tilted first label runs left of its bar: room for it (then the slots are recomputed)
    pad_l = PAD_L if not tilt else max(PAD_L, int(min(len(labs[0]), 24) * 5.2 * 0.82 - slot * 0.35))
    slot = (width - pad_l - pad_r) / n
    height = H - PAD_B + pad_b
    plot = height - PAD_T - pad_b
    top = _nice_max(max(vals, default=0))
    body = [f"<title>{escape(label)}</title>"]
    for i in range(5):
        y = height - pad_b - plot * i / 4
        body.append(f'<line class="grid" x1="{pad_l}" y1="{y:.1f}" x2="{width - pad_r}" y2="{y:.1f}"/>')
        body.append(
            f'<text class="axis" x="{pad_l - 6}" y="{y + 4:.1f}" text-anchor="end">{top * i / 4:g}</text>'
        )
        body.append(f'<text class="axis" x="{width - pad_r + 6}" y="{y + 4:.1f}">{25 * i}%</text>')
    y80 = height - pad_b - plot * 0.8
    body.append(f'<line class="mark" x1="{pad_l}" y1="{y80:.1f}" x2="{width - pad_r}" y2="{y80:.1f}"/>')
    points: list[str] = []
    dots: list[str] = []
    running = 0
    for i, (lab, v) in enumerate(zip(labs, vals, strict=True)):
        h = plot * (v / top)
        x = pad_l + i * slot + slot * 0.15
        y = height - pad_b - h
        running += v
        share = running / total
        body.append(
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" height="{h:.1f}">'
            f"<title>{escape(lab)}: {v:g} ({v / total:.0%})</title></rect>"
        )
        if slot >= 26:
            body.append(
                f'<text class="value" x="{x + slot * 0.35:.1f}" y="{y - 4:.1f}" text-anchor="middle">{v:g}</text>'
            )
        cx, cy = x + slot * 0.35, height - pad_b - plot * share
        points.append(f"{'M' if not points else 'L'}{cx:.1f},{cy:.1f}")
        dots.append(
            f'<circle class="cum-dot" cx="{cx:.1f}" cy="{cy:.1f}" r="3.5"><title>{escape(lab)} and those before:'
            f" {share:.0%} of all reasons</title></circle>"
        )
        shown = lab if len(lab) <= 24 else lab[:23] + "…"
        lx, ly = x + slot * 0.35, height - pad_b + 14
        if tilt:
            body.append(
                f'<text class="axis" x="{lx:.1f}" y="{ly:.1f}" text-anchor="end"'
                f' transform="rotate(-35 {lx:.1f} {ly:.1f})">{escape(shown)}</text>'
            )
        else:
            body.append(
                f'<text class="axis" x="{lx:.1f}" y="{ly + 2:.1f}" text-anchor="middle">{escape(shown)}</text>'
            )
    if points:
        body.append(f'<path class="cum" d="{" ".join(points)}"/>')
    body += dots
    return _svg(body, label, width, height)
