"""Asterisk channel names to the interface they belong to (channel-naming rules, not site config)."""

from __future__ import annotations


def normalize_interface(name: str | None) -> str | None:
    """`PJSIP/1001-0000000a` → `PJSIP/1001`; `Local/agent1@agents-00000001;1` and the queue member
    `Local/agent1@agents/n` → `Local/agent1@agents`. Other names are returned as they are.
    """
    if not name:
        return None
    if name.startswith("Local/"):
        target = name[6:]
        target = target.split("/", 1)[0]  # options such as /n
        if ";" in target:
            target = target.rsplit(";", 1)[0]
        at = target.rfind("@")
        dash = target.rfind("-")
        if dash > at >= 0:
            suffix = target[dash + 1 :]
            if len(suffix) == 8 and all(c in "0123456789abcdef" for c in suffix):
                target = target[:dash]
        return "Local/" + target
    tech, sep, resource = name.partition("/")
    if not sep:
        return name
    dash = resource.rfind("-")
    if dash > 0:
        suffix = resource[dash + 1 :]
        if len(suffix) >= 8 and all(c in "0123456789abcdef" for c in suffix):
            resource = resource[:dash]
    return f"{tech}/{resource}"
