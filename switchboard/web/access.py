"""Who may call which route: the one table of roles and ownership rules, enforced by the auth middleware.

Every route the app registers has a rule here; a route without one answers 403 (fail closed) and the
route × role test fails. A rule names the roles that may call the route at all (checked here, before
the handler runs) and, in `scope`, the per-object rule the handler enforces on top (e.g. a rep only
sees their own customers). Public routes name what authenticates them instead of a session.
"""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("rep", "manager", "marketing", "admin")


@dataclass(frozen=True, slots=True)
class Rule:
    """The roles allowed on a route (empty: no sign-in needed) and what else is checked."""

    roles: frozenset[str]
    scope: str = ""  # the object-level rule the handler applies, in words
    public: str = ""  # for routes without sign-in: what authenticates the caller instead

    @property
    def is_public(self) -> bool:
        return not self.roles


def staff(*roles: str, scope: str = "") -> Rule:
    """A rule for signed-in users of `roles` (every role when none is given)."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}")
    return Rule(frozenset(roles or ROLES), scope=scope)


def public(why: str) -> Rule:
    """A rule for a route that needs no session: `why` says what protects it."""
    return Rule(frozenset(), public=why)


OWN_CONTACTS = "reps: their own customers, unowned ones, and one they are on a call with (audited)"

FOLLOWUP_SCOPE = (
    "reps: follow-ups assigned to them, unclaimed in their pools, or unassigned on their customers"
)

# (method, route as registered) -> rule. HEAD follows GET.
RULES: dict[tuple[str, str], Rule] = {
    # service and sign-in
    ("GET", "/healthz"): public("liveness only, no data"),
    ("GET", "/readyz"): public("readiness for a load balancer, no data"),
    ("GET", "/static"): public("the pages' CSS and JS"),
    ("GET", "/favicon.ico"): public("the site's icon"),
    ("GET", "/login"): public("the sign-in form"),
    ("POST", "/login"): public("the password itself; pre-login token; failed attempts limited"),
    ("POST", "/logout"): staff(),
    ("GET", "/api/v1/me"): staff(),
    ("GET", "/ws/agent"): staff(scope="own pops only; Origin must be this site unless ?token="),
    # webhooks: provider signature or the channel's secret
    ("POST", "/twilio/sms/status"): public("X-Twilio-Signature"),
    ("POST", "/twilio/sms/incoming"): public("X-Twilio-Signature"),
    ("POST", "/twilio/voice/incoming"): public("X-Twilio-Signature"),
    ("POST", "/twilio/voice/leg-status"): public("X-Twilio-Signature"),
    ("POST", "/twilio/voice/status"): public("X-Twilio-Signature"),
    ("POST", "/twilio/voice/dial-result"): public("X-Twilio-Signature"),
    ("POST", "/twilio/voice/outbound-connect"): public("X-Twilio-Signature"),
    ("POST", "/twilio/voice/recording"): public("X-Twilio-Signature"),
    ("GET", "/asterisk/owner"): public("[asterisk] route_secret in the query"),
    ("GET", "/sms/kannel/dlr"): public("the channel's secret in the query"),
    ("GET", "/sms/kannel/incoming"): public("the channel's secret in the query"),
    ("GET", "/email/unsubscribe/{token}"): public("the signed unsubscribe token"),
    ("POST", "/email/unsubscribe/{token}"): public("the signed unsubscribe token"),
    # users
    ("POST", "/api/v1/users"): staff("admin"),
    ("GET", "/api/v1/users"): staff("admin", "manager"),
    ("PATCH", "/api/v1/users/{id}"): staff("admin"),
    ("GET", "/admin"): staff("admin"),
    # CRM write-back: deliveries, re-drive, the CRM's contact upsert (an admin's token)
    ("GET", "/admin/crm"): staff("admin"),
    ("POST", "/admin/crm/redrive"): staff("admin"),
    ("GET", "/api/v1/crm/deliveries"): staff("admin"),
    ("GET", "/api/v1/crm/deliveries/summary"): staff("admin"),
    ("POST", "/api/v1/crm/deliveries/redrive"): staff("admin"),
    ("GET", "/api/v1/crm/deliveries/{id}"): staff("admin"),
    ("POST", "/api/v1/crm/deliveries/{id}/redrive"): staff("admin"),
    ("POST", "/api/v1/crm/contacts"): staff("admin"),
    ("POST", "/api/v1/contacts/{id}/merge"): staff("admin", "manager"),
    ("POST", "/admin/users"): staff("admin"),
    ("GET", "/admin/users/{id}"): staff("admin"),
    ("POST", "/admin/users/{id}"): staff("admin"),
    ("POST", "/admin/users/{id}/password"): staff("admin"),
    ("POST", "/admin/users/{id}/active"): staff("admin", scope="not oneself"),
    ("GET", "/account"): staff(scope="one's own account"),
    ("POST", "/account/password"): staff(scope="one's own password, knowing the current one"),
    # contacts and their history
    ("GET", "/"): staff(scope="the user's own My Day"),
    ("GET", "/api/v1/me/day"): staff(scope="the user's own My Day"),
    ("GET", "/contacts"): staff(scope="reps: search their own and unowned customers"),
    ("GET", "/api/v1/contacts"): staff(scope="reps: search their own and unowned customers"),
    ("POST", "/api/v1/contacts"): staff(scope="reps: the owner is themselves"),
    ("GET", "/contacts/export.csv"): staff(scope="reps: their own and unowned customers"),
    ("GET", "/contacts/new"): staff(),
    ("POST", "/contacts/new"): staff(scope="reps: the owner is themselves"),
    ("GET", "/api/v1/contacts/{id}"): staff(scope=OWN_CONTACTS),
    ("PATCH", "/api/v1/contacts/{id}"): staff(
        scope="reps: their own and unowned customers; owner: themselves"
    ),
    ("GET", "/api/v1/contacts/{id}/touches"): staff(scope=OWN_CONTACTS),
    ("GET", "/contacts/{id}"): staff(scope=OWN_CONTACTS),
    ("POST", "/api/v1/contacts/{id}/touches"): staff("rep", "manager", "admin", scope=OWN_CONTACTS),
    ("POST", "/contacts/{id}/touches"): staff("rep", "manager", "admin", scope=OWN_CONTACTS),
    # follow-ups and cadences
    ("GET", "/api/v1/followups"): staff(scope="reps: their own and their pools' follow-ups"),
    ("POST", "/api/v1/followups"): staff("rep", "manager", "admin", scope=OWN_CONTACTS),
    ("GET", "/api/v1/followups/team"): staff("manager", "admin"),
    ("POST", "/api/v1/followups/{id}/done"): staff("rep", "manager", "admin", scope=FOLLOWUP_SCOPE),
    ("POST", "/api/v1/followups/{id}/no-answer"): staff("rep", "manager", "admin", scope=FOLLOWUP_SCOPE),
    ("POST", "/api/v1/followups/{id}/reschedule"): staff("rep", "manager", "admin", scope=FOLLOWUP_SCOPE),
    ("POST", "/api/v1/followups/{id}/handoff"): staff("rep", "manager", "admin", scope=FOLLOWUP_SCOPE),
    ("POST", "/api/v1/followups/{id}/claim"): staff(
        "rep", "manager", "admin", scope="reps: an unclaimed follow-up of a pool they are in"
    ),
    ("GET", "/api/v1/cadences"): staff(),
    ("POST", "/api/v1/cadences"): staff("manager", "admin"),
    ("PUT", "/api/v1/cadences/{id}"): staff("manager", "admin"),
    ("DELETE", "/api/v1/cadences/{id}"): staff("manager", "admin"),
    ("GET", "/followups/team"): staff("manager", "admin"),
    # surveys: managers build them; agents answer on a call; answers are locked
    ("GET", "/api/v1/surveys"): staff(),
    ("POST", "/api/v1/surveys"): staff("manager", "admin"),
    ("GET", "/api/v1/surveys/{id}"): staff(),
    ("PUT", "/api/v1/surveys/{id}"): staff("manager", "admin"),
    ("POST", "/api/v1/surveys/{id}/responses"): staff("rep", "manager", "admin", scope=OWN_CONTACTS),
    ("GET", "/api/v1/survey-responses/{id}"): staff(scope=OWN_CONTACTS),
    ("PUT", "/api/v1/survey-responses/{id}"): staff(
        "manager", "admin", scope="a correction is a new version"
    ),
    ("POST", "/api/v1/survey-responses/{id}/resolution"): staff(
        "rep", "manager", "admin", scope="reps: only a complaint follow-up assigned to them"
    ),
    ("GET", "/api/v1/contacts/{id}/survey-responses"): staff(scope=OWN_CONTACTS),
    ("PUT", "/api/v1/call-lists/{id}/survey"): staff("manager", "admin"),
    ("GET", "/surveys"): staff("manager", "admin"),
    ("GET", "/api/v1/reports/surveys/{id}"): staff("manager", "admin"),
    ("GET", "/surveys/{id}/report"): staff("manager", "admin"),
    ("GET", "/reports/surveys"): staff("manager", "admin"),
    # calls
    ("POST", "/api/v1/calls"): staff(
        "rep", "manager", "admin", scope="reps: their own customers, from their own extension"
    ),
    ("POST", "/api/v1/calls/{call_id}/disposition"): staff(
        "rep",
        "manager",
        "admin",
        scope="reps: a call they are on or took, or a missed call of a customer they may see",
    ),
    # call lists and the dialer
    ("GET", "/api/v1/segments"): staff("manager", "admin", "marketing"),
    ("POST", "/api/v1/segments"): staff("manager", "admin", "marketing"),
    ("POST", "/api/v1/segments/preview"): staff("manager", "admin", "marketing"),
    ("DELETE", "/api/v1/segments/{id}"): staff("manager", "admin", "marketing"),
    ("PUT", "/api/v1/segments/{id}"): staff("manager", "admin", "marketing"),
    ("GET", "/api/v1/call-lists"): staff("rep", "manager", "admin", scope="reps: lists they work"),
    ("POST", "/api/v1/call-lists"): staff("manager", "admin"),
    ("GET", "/api/v1/call-lists/{id}"): staff("rep", "manager", "admin", scope="reps: lists they work"),
    ("GET", "/api/v1/call-lists/{id}/entries"): staff(
        "rep", "manager", "admin", scope="reps: lists they work"
    ),
    ("POST", "/api/v1/call-lists/{id}/entries"): staff("manager", "admin"),
    ("POST", "/api/v1/call-lists/{id}/{action}"): staff("manager", "admin"),
    ("GET", "/call-lists"): staff("rep", "manager", "admin", scope="reps: lists they work"),
    ("POST", "/api/v1/agent/next-call"): staff("rep", "manager", scope="lists the agent works"),
    ("POST", "/api/v1/agent/ready"): staff("rep", "manager", scope="lists the agent works"),
    ("GET", "/api/v1/agent/dialer"): staff("rep", "manager", scope="the agent's own calls"),
    ("POST", "/api/v1/agent/entries/{id}/dial"): staff("rep", "manager", scope="an entry the agent holds"),
    ("POST", "/api/v1/agent/entries/{id}/skip"): staff("rep", "manager", scope="an entry the agent holds"),
    ("POST", "/api/v1/call-attempts/{id}/disposition"): staff(
        "rep", "manager", "admin", scope="reps: their own attempts"
    ),
    # SMS
    ("GET", "/sms/blasts"): staff("marketing", "manager", "admin"),
    ("POST", "/api/v1/sms/blasts"): staff("marketing", "manager", "admin"),
    ("POST", "/api/v1/sms/blasts/dry-run"): staff("marketing", "manager", "admin"),
    ("GET", "/api/v1/sms/blasts"): staff("marketing", "manager", "admin"),
    ("GET", "/api/v1/sms/blasts/{id}"): staff("marketing", "manager", "admin"),
    ("POST", "/api/v1/sms/blasts/{id}/{action}"): staff("marketing", "manager", "admin"),
    ("POST", "/api/v1/sms/blasts/{id}/resend-unknown"): staff("manager", "admin"),
    ("POST", "/api/v1/sms/preview"): staff(scope="reps: a customer they may see"),
    ("POST", "/api/v1/sms/send"): staff("rep", "manager", "admin", scope="reps: a customer they may see"),
    ("GET", "/api/v1/sms/templates"): staff(),
    ("POST", "/api/v1/sms/templates"): staff("manager", "marketing", "admin"),
    ("PUT", "/api/v1/sms/templates/{id}"): staff("manager", "marketing", "admin"),
    ("DELETE", "/api/v1/sms/templates/{id}"): staff("manager", "marketing", "admin"),
    # email
    ("GET", "/email/templates"): staff(),
    ("GET", "/api/v1/email/templates"): staff(),
    ("POST", "/api/v1/email/templates"): staff(),
    ("GET", "/api/v1/email/templates/{id}"): staff(),
    ("PUT", "/api/v1/email/templates/{id}"): staff(scope="reps: only templates they wrote"),
    ("DELETE", "/api/v1/email/templates/{id}"): staff("manager", "marketing", "admin"),
    ("POST", "/api/v1/email/templates/{id}/preview"): staff(scope="reps: a customer they may see"),
    ("POST", "/api/v1/email/preview"): staff(scope="reps: a customer they may see"),
    ("POST", "/api/v1/email/send"): staff(scope="reps: customers they may see"),
    ("GET", "/api/v1/email/jobs/{id}"): staff(scope="reps: only jobs they started"),
    ("POST", "/api/v1/email/jobs/{id}/resend-unknown"): staff(
        "rep", "manager", "marketing", "admin", scope="reps: only jobs they started"
    ),
    # recordings
    ("GET", "/recordings"): staff("manager", "admin", "rep", scope="reps: their own calls"),
    ("GET", "/api/v1/recordings"): staff("manager", "admin", "rep", scope="reps: their own calls"),
    ("GET", "/api/v1/recordings/transcripts"): staff("manager", "admin", "rep"),
    ("GET", "/api/v1/recordings/{id}"): staff("manager", "admin", "rep", scope="reps: their own calls"),
    ("GET", "/api/v1/recordings/{id}/audio"): staff(
        "manager", "admin", "rep", scope="reps: their own calls (plays audited)"
    ),
    ("PATCH", "/api/v1/recordings/{id}"): staff("manager", "admin"),
    ("POST", "/api/v1/recordings/export"): staff("manager", "admin"),
    # reports and the live agent board
    ("GET", "/reports"): staff("manager", "admin"),
    ("GET", "/api/v1/reports/calls"): staff("manager", "admin"),
    ("GET", "/api/v1/reports/messaging"): staff("manager", "admin"),
    ("GET", "/api/v1/reports/followups"): staff("manager", "admin"),
    ("GET", "/agents"): staff(scope="reps: their own state only"),
    ("GET", "/api/v1/agents"): staff(scope="reps: their own state only"),
    ("POST", "/api/v1/agents/me/state"): staff(scope="the user's own state"),
    # the demo's mail sink (registered by `switchboard demo` only)
    ("GET", "/demo/mail"): staff(),
}


def rule_for(method: str, route: str) -> Rule | None:
    """The rule of a registered route (`route` as registered, e.g. /api/v1/contacts/{id})."""
    return RULES.get(("GET" if method == "HEAD" else method, route))
