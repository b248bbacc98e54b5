"""Outbound work: call lists (dialer), SMS blasts and SMS channels."""
