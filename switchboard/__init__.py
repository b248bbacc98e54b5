"""Switchboard: an asyncio contact-center service bridging phones and messaging to a CRM store."""

__version__ = "0.1.0"
