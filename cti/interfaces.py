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


DIAL_FIELDS = ("extension", "username")


def dial_template_fields(template: str) -> set[str]:
    """The placeholders of an `agent_dial` template; ValueError naming any but {extension}/{username}."""
    import string

    fields: set[str] = set()
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"not a valid template: {exc}") from None
    for _, name, spec, conv in parsed:
        if name is None:
            continue
        if name not in DIAL_FIELDS or spec or conv:
            raise ValueError(f"unknown placeholder {{{name}}}: use {{extension}} or {{username}}")
        fields.add(name)
    if not template.strip() or "/" not in template:
        raise ValueError("must name a channel technology, e.g. PJSIP/{extension}")
    return fields


def dial_interface(
    template: str, *, extension: str | None, username: str | None, override: str | None = None
) -> str | None:
    """The interface to ring for a user: `override` (their [dial_interfaces] entry) if any, else the
    template filled in; None when the template needs a value the user lacks (no extension, say)."""
    if override:
        return override
    fields = dial_template_fields(template)
    values = {"extension": extension or "", "username": username or ""}
    if any(not values[f] for f in fields):
        return None
    return template.format(**values)
