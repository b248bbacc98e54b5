"""Asterisk Manager Interface: a pure protocol layer and a thin asyncio client."""
