"""The follow-up loop: cadence rules, the daily sweep, routing, escalation, hand-off."""
