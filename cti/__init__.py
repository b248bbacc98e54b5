"""Telephony: AMI protocol and client, call tracking, Twilio voice, screen-pops, click-to-call."""
