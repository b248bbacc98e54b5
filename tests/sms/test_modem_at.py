"""The AT dialogue as text: result codes, responses, unsolicited lines, error meanings."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from campaigns.sms.modem import at


def test_final_result_codes() -> None:
    assert at.parse_final("OK") == at.Final(True)
    assert at.parse_final("ERROR") == at.Final(False, "ERROR")
    e = at.parse_final("+CMS ERROR: 38")
    assert e is not None and e.code == 38 and e.reason == "network out of order" and e.retryable
    e = at.parse_final("+CMS ERROR: 1")
    assert e is not None and e.reason == "unassigned (unallocated) number" and not e.retryable
    e = at.parse_final("+CMS ERROR: 304")
    assert e is not None and e.reason == "invalid PDU mode parameter" and not e.retryable
    e = at.parse_final("+CME ERROR: 11")
    assert e is not None and e.reason == "SIM PIN required" and not e.retryable
    assert at.parse_final("+CMGS: 12") is None and at.parse_final("OKAY") is None


def test_responses_and_unsolicited_lines() -> None:
    assert at.parse_cmti('+CMTI: "SM",3') == ("SM", 3)
    assert at.parse_cmti("+CMTI: ME,12") == ("ME", 12)
    assert at.parse_cds("+CDS: 25") == 25
    assert at.parse_cmgs(["+CMGS: 217"]) == 217
    assert at.parse_cmgr(["+CMGR: 0,,27", "07911326040000F0"]) == (0, 27, "07911326040000F0")
    assert at.parse_cmgl(["+CMGL: 1,1,,20", "AA", "+CMGL: 4,0,,21", "BB"]) == [
        (1, 1, 20, "AA"),
        (4, 0, 21, "BB"),
    ]
    assert at.parse_csq(["+CSQ: 20,99"]) == (20, 99)
    assert at.parse_cpin(["+CPIN: SIM PIN"]) == "SIM PIN"
    assert at.is_boot("RDY") and not at.is_boot("OK")


@given(st.integers(min_value=0, max_value=999))
def test_every_cms_code_has_a_reason(code: int) -> None:
    e = at.parse_final(f"+CMS ERROR: {code}")
    assert e is not None and e.code == code and e.reason and isinstance(e.retryable, bool)
