"""This period against the previous one: the change of a figure as a manager reads it."""

from __future__ import annotations

RATES = ("answer_rate", "success_rate")


def change(column: str, current: float | None, previous: float | None) -> str:
    """'+3 (+12%)' for counts, '+5.0 pts' for rates, '+1.2 s' for seconds; '–' when either is
    missing; '0' when equal."""
    if current is None or previous is None:
        return "–"
    diff = current - previous
    if column in RATES:
        pts = round(diff * 100, 1)
        return "0" if pts == 0 else f"{pts:+.1f} pts"
    if column.endswith("_s") and not column == "talk_s":
        d = round(diff, 1)
        return "0" if d == 0 else f"{d:+.1f} s"
    if diff == 0:
        return "0"
    if column == "talk_s":  # a duration: h:mm:ss like the figure itself
        whole = round(abs(diff))
        text = f"{'+' if diff > 0 else '-'}{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"
    else:
        text = f"{diff:+,.0f}"
    if previous:
        text += f" ({diff / previous:+.0%})"
    return text
