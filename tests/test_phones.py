import pytest
from hypothesis import given
from hypothesis import strategies as st

from crm_link.errors import ValidationError
from crm_link.phones import normalize_phone


@pytest.mark.parametrize(
    "raw",
    [
        "+15551234567",
        "555-123-4567",
        "(555) 123-4567",
        "1 555 123 4567",
        "+1.555.123.4567",
        "tel:+15551234567",
    ],
)
def test_formats_of_one_number_agree(raw: str) -> None:
    p = normalize_phone(raw, "US")
    assert p.e164 == "+15551234567"
    assert p.valid is False  # fictional 555 number: kept, flagged


def test_valid_number() -> None:
    p = normalize_phone("+44 20 7946 0958", "US")
    assert p.e164 == "+442079460958"
    p = normalize_phone("(212) 736-5000", "US")
    assert p.valid and p.e164 == "+12127365000"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("12", "too short"),
        ("1-800-FLOWERS", "letters"),
        ("+1 212 736 5000 12345 6789", "long"),
        ("", "empty"),
    ],
)
def test_impossible_numbers_rejected_with_reason(raw: str, reason: str) -> None:
    with pytest.raises(ValidationError) as exc:
        normalize_phone(raw, "US", field="phones[0]")
    assert exc.value.field == "phones[0]"
    assert reason in exc.value.reason


@given(st.text(max_size=40))
def test_any_text_is_a_phone_or_a_validation_error(raw: str) -> None:
    try:
        p = normalize_phone(raw, "US")
    except ValidationError:
        return
    assert p.e164.startswith("+")
    assert normalize_phone(p.e164, "GB").e164 == p.e164  # E.164 is a fixed point, whatever the region
