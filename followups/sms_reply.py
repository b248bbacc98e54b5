"""A customer's SMS reply read as a score, pure: "4", "five", "FIVE!", "5/5", "4 out of 5",
"⭐⭐⭐⭐", "5 stars". Anything else is not an answer (None) and goes the normal reply's way.

No I/O and no guessing: a text with two different numbers, a number outside the scale, a fraction
of another scale or words beyond a few fillers ("I give it", "stars", "thanks") is not an answer.
"""

from __future__ import annotations

import re

WORDS = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}
STARS = ("⭐", "★", "🌟")  # U+2B50, U+2605, U+1F31F (a variation selector after one is ignored)
# words that may stand around the number without making the text something else
FILLERS = frozenset(
    "i id i'd would give it a an my rating rate score is was be star stars out of points pts"
    " thanks thank you thx ty ok okay solid overall definitely".split()
)
MAX_LEN = 160  # one SMS: a longer text is a message, not a score

_NEGATIVE = re.compile(r"(?:^|[^\w])[-\u2212]\d", re.ASCII)
_TOKEN = re.compile(r"[a-z']+|\d+(?:[.,]\d+)?|/", re.ASCII)


def parse_score(text: str, lo: int, hi: int) -> int | None:
    """The score `text` gives on the scale lo..hi, or None when it is not (only) a score."""
    if not isinstance(text, str) or len(text) > MAX_LEN:
        return None
    lowered = text.lower().replace("\ufe0f", "")
    stars = sum(lowered.count(s) for s in STARS)
    for s in STARS:
        lowered = lowered.replace(s, " ")
    if _NEGATIVE.search(lowered):
        return None  # -1: below any scale, not a score
    tokens = _TOKEN.findall(lowered)
    rest = _TOKEN.sub(" ", lowered)
    if any(ch.isalnum() for ch in rest):  # letters or digits of another script: not ours to read
        return None
    numbers: list[int] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if "." in tok or "," in tok:
            return None  # 4.5: not a point on the scale
        value = int(tok) if tok[0].isdigit() else WORDS.get(tok)
        if value is None:
            if tok == "/" or tok not in FILLERS:
                return None
            i += 1
            continue
        # "4/5", "4 / 5", "four out of five": a fraction of our scale's top is its numerator
        slash = tokens[i + 1 : i + 2] == ["/"]
        if slash or tokens[i + 1 : i + 3] == ["out", "of"]:
            j = i + 2 if slash else i + 3
            if j >= len(tokens):
                return None
            den = tokens[j]
            if (int(den) if den.isdigit() else WORDS.get(den)) != hi:
                return None
            i = j
        numbers.append(value)
        i += 1
    if stars and (not numbers or stars > 1):
        numbers.append(stars)  # ⭐⭐⭐⭐ alone is 4; "5 ⭐" is 5; "5 ⭐⭐⭐" disagrees
    if not numbers or len(set(numbers)) != 1:
        return None
    value = numbers[0]
    return value if lo <= value <= hi else None
