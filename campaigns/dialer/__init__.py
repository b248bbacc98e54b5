"""Outbound call lists: calling hours, the dialer (preview and progressive), dial backends."""

# the default dispositions of a call (settings: [dialer] dispositions)
DISPOSITIONS = (
    "sold",
    "appointment set",
    "call back",
    "not interested",
    "no answer",
    "busy",
    "left message",
    "wrong number",
    "do not call",
    "other",
)

# the disposition of a call whose survey was answered (given by submitting it, not chosen)
SURVEY_DONE = "completed survey"
