"""Phone number normalization: raw text in, E.164 plus a validity flag out."""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers
import phonenumbers.timezone as pn_timezone
from phonenumbers import PhoneNumberType, ValidationResult

from crm_link.errors import ValidationError

_REASONS = {
    ValidationResult.TOO_SHORT: "too short to be a phone number",
    ValidationResult.TOO_LONG: "too long to be a phone number",
    ValidationResult.INVALID_COUNTRY_CODE: "unknown country calling code",
    ValidationResult.INVALID_LENGTH: "wrong number of digits for its country",
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "a local number; add the area code",
}

_KINDS = {
    PhoneNumberType.MOBILE: "mobile",
    PhoneNumberType.FIXED_LINE: "landline",
    PhoneNumberType.FIXED_LINE_OR_MOBILE: "fixed_or_mobile",
    PhoneNumberType.TOLL_FREE: "toll_free",
    PhoneNumberType.VOIP: "voip",
    PhoneNumberType.PREMIUM_RATE: "premium",
}


@dataclass(frozen=True, slots=True)
class Phone:
    """A normalized number: what was typed, its E.164 form, and whether the plan knows it."""

    raw: str
    e164: str
    valid: bool
    kind: str  # mobile | landline | fixed_or_mobile | toll_free | voip | premium | unknown
    extension: str | None = None  # dialled after the call connects: "12" of "x12" / "ext. 12"


_EXTENSION = re.compile(r"\s*[,;]?\s*(?:x|ext\.?|extn\.?|extension|#)\s*(\d{1,7})\s*$", re.IGNORECASE)


def split_extension(text: str) -> tuple[str, str | None]:
    """The number and its extension: "(312) 555-0142 ext. 12" -> ("(312) 555-0142", "12")."""
    m = _EXTENSION.search(text)
    if m is None or m.start() == 0:
        return text, None
    return text[: m.start()], m.group(1)


def normalize_phone(raw: str, default_region: str = "US", *, field: str = "phone") -> Phone:
    """Parse `raw` as a phone number; raise ValidationError naming `field` when it cannot be one."""
    if not isinstance(raw, str):
        raise ValidationError(field, "must be a string")
    text = raw.strip()
    if text.lower().startswith("tel:"):
        text = text[4:]
    if not text:
        raise ValidationError(field, "is empty")
    text, extension = split_extension(text)
    if any(ch.isalpha() for ch in text):
        raise ValidationError(field, f"{raw!r} contains letters; a phone number has digits only")
    try:
        num = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as exc:
        raise ValidationError(field, f"{raw!r} is not a phone number ({exc._msg})") from None
    result = phonenumbers.is_possible_number_with_reason(num)
    if result not in (ValidationResult.IS_POSSIBLE,):
        raise ValidationError(field, f"{raw!r} is {_REASONS.get(result, 'not a possible number')}")
    e164 = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
    valid = phonenumbers.is_valid_number(num)
    kind = _KINDS.get(phonenumbers.number_type(num), "unknown") if valid else "unknown"
    return Phone(raw=raw.strip(), e164=e164, valid=valid, kind=kind, extension=extension)


def try_e164(raw: str | None, default_region: str = "US") -> str | None:
    """E.164 of a caller ID or search string, or None when it cannot be a number."""
    if not raw:
        return None
    try:
        return normalize_phone(raw, default_region).e164
    except ValidationError:
        return None


def format_national(e164: str) -> str:
    """A number for people to read, in its country's national format."""
    try:
        return phonenumbers.format_number(phonenumbers.parse(e164), phonenumbers.PhoneNumberFormat.NATIONAL)
    except phonenumbers.NumberParseException:
        return e164


def zone_for_number(e164: str) -> str | None:
    """The one IANA zone a number's area maps to, or None when it maps to several (or none)."""
    try:
        zones = pn_timezone.time_zones_for_number(phonenumbers.parse(e164))
    except phonenumbers.NumberParseException:
        return None
    real = [z for z in zones if z != "Etc/Unknown"]
    return real[0] if len(real) == 1 else None


PHONE_COLUMNS = ("phone", "mobile", "number", "phone_number")


def phones_from_csv(text: object, default_region: str, *, field: str) -> list[str]:
    """The E.164 numbers of a CSV's phone column (blank cells skipped); a ValidationError naming
    `field` lists the lines whose number is impossible, and nothing is returned then."""
    import csv
    import io

    if not isinstance(text, str) or not text.strip():
        raise ValidationError(field, "must be CSV text with a phone column")
    rows = list(csv.reader(io.StringIO(text)))
    header = [h.strip().lower() for h in rows[0]]
    col = next((i for i, h in enumerate(header) if h in PHONE_COLUMNS), None)
    if col is None:
        raise ValidationError(field, "needs a column named phone")
    numbers: list[str] = []
    problems: list[str] = []
    for line, row in enumerate(rows[1:], start=2):
        raw = row[col].strip() if col < len(row) else ""
        if not raw:
            continue
        try:
            numbers.append(normalize_phone(raw, default_region, field=field).e164)
        except ValidationError as exc:
            problems.append(f"line {line}: {exc.reason}")
    if problems:
        raise ValidationError(field, "; ".join(problems[:10]) + (" …" if len(problems) > 10 else ""))
    return numbers
