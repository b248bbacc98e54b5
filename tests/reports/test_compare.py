"""How a change against the previous period reads on the reports page."""

from reports.compare import change


def test_counts_rates_and_seconds() -> None:
    assert change("inbound", 23, 20) == "+3 (+15%)"
    assert change("missed", 4, 8) == "-4 (-50%)"
    assert change("outbound", 5, 0) == "+5"  # no percentage of nothing
    assert change("answered", 7, 7) == "0"
    assert change("answer_rate", 0.8, 0.75) == "+5.0 pts"
    assert change("success_rate", 0.5, 0.5) == "0"
    assert change("avg_wait_s", 12.5, 14.0) == "-1.5 s"
    assert change("talk_s", 3600, 1200) == "+0:40:00 (+200%)"
    assert change("talk_s", 1200, 4861) == "-1:01:01 (-75%)"
    assert change("p90_wait_s", None, 3) == "–"
    assert change("avg_callback_s", 30.0, None) == "–"
