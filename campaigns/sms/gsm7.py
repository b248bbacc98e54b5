"""GSM 03.38 7-bit or UCS-2: which one a text needs, how many segments, and its parts (pure)."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)

GSM7_SINGLE, GSM7_MULTI = 160, 153
UCS2_SINGLE, UCS2_MULTI = 70, 67
# characters that force UCS-2 but have a GSM-7 look-alike
REPLACEMENTS = {
    "\u2018": "'",
    "\u2019": "'",
    "\u201a": "'",
    "\u201b": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u201e": '"',
    "\u2013": "-",
    "\u2014": "-",
    "\u2026": "...",
    "\u00a0": " ",
    "\u2022": "*",
}


class MessageTooLong(ValueError):
    """The text needs more parts than allowed; it is never truncated."""

    def __init__(self, segments: int, max_parts: int, encoding: str) -> None:
        super().__init__(f"needs {segments} {encoding.upper()} segments; at most {max_parts} are allowed")
        self.segments = segments
        self.max_parts = max_parts


@lru_cache(maxsize=8192)
def septets(ch: str) -> int | None:
    """Septets a character takes in GSM-7 (2 for the extension table), None if it has none."""
    if ch == "\x1b":
        return None  # 0x1B is the escape to the extension table, never a character of its own
    try:
        return len(ch.encode("gsm03.38"))
    except UnicodeEncodeError:
        return None


@dataclass(frozen=True, slots=True)
class SmsAnalysis:
    encoding: str  # "gsm7" | "ucs2"
    segments: int
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    per_segment: int
    parts: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "encoding": self.encoding,
            "segments": self.segments,
            "units": self.units,
            "per_segment": self.per_segment,
            "warnings": self.warnings,
        }


def _split(text: str, cost: list[int], limit: int) -> list[str]:
    """Split at character boundaries so no character (escape pair, surrogate pair) straddles parts."""
    parts, start, used = [], 0, 0
    for i, c in enumerate(cost):
        if used + c > limit:
            parts.append(text[start:i])
            start, used = i, 0
        used += c
    parts.append(text[start:])
    return parts


def analyze(text: str, max_parts: int = 10) -> SmsAnalysis:
    """Encoding, segment count and parts of a message; MessageTooLong past `max_parts`."""
    gsm_cost = [septets(ch) for ch in text]
    if all(c is not None for c in gsm_cost):
        cost = [c for c in gsm_cost if c is not None]
        total = sum(cost)
        if total <= GSM7_SINGLE:
            analysis = SmsAnalysis("gsm7", 1, total, GSM7_SINGLE, [text])
        else:
            parts = _split(text, cost, GSM7_MULTI)
            analysis = SmsAnalysis("gsm7", len(parts), total, GSM7_MULTI, parts)
    else:
        cost = [len(ch.encode("utf-16-le")) // 2 for ch in text]
        total = sum(cost)
        forcing = list(dict.fromkeys(ch for ch, c in zip(text, gsm_cost, strict=True) if c is None))
        gsm_if_replaced = all(ch in REPLACEMENTS for ch in forcing)
        warnings = []
        for ch in forcing[:5]:
            name = unicodedata.name(ch, f"U+{ord(ch):04X}")
            hint = f"; use {REPLACEMENTS[ch]!r} instead" if ch in REPLACEMENTS else ""
            warnings.append(f"{ch} ({name}) forces UCS-2{hint}")
        if total <= UCS2_SINGLE:
            analysis = SmsAnalysis("ucs2", 1, total, UCS2_SINGLE, [text], warnings)
        else:
            parts = _split(text, cost, UCS2_MULTI)
            analysis = SmsAnalysis("ucs2", len(parts), total, UCS2_MULTI, parts, warnings)
        if gsm_if_replaced:
            plain = analyze("".join(REPLACEMENTS.get(ch, ch) for ch in text), max_parts=10**6)
            if plain.segments < analysis.segments:
                warnings.append(f"{analysis.segments} segments instead of {plain.segments} in GSM-7")
    if analysis.segments > max_parts:
        raise MessageTooLong(analysis.segments, max_parts, analysis.encoding)
    return analysis
