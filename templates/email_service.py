"""Email templates put to work: validate, preview against a customer, queue sends, and the send loop."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from email.utils import parseaddr
from html import escape as html_escape
from typing import Any

from crm_link.clock import system_clock
from crm_link.email import EmailRow, OutboxEmail
from crm_link.errors import ValidationError
from crm_link.lanes import every, run_lanes
from crm_link.models import Contact, User
from crm_link.store import Store
from templates.context import merge_context, unknown_codes, unknown_codes_message
from templates.email_message import Outgoing, html_to_text, new_message_id, unsubscribe_token, wire_message
from templates.render import MissingMergeCode, Renderer, TemplateError, TemplateTooCostly
from templates.smtp import SmtpSender

log = logging.getLogger("templates.email")


def text_to_html(text: str) -> str:
    """A plain text as simple HTML: escaped, paragraphs and line breaks kept."""
    paragraphs = [p for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]
    return "".join(f"<p>{html_escape(p).replace(chr(10), '<br>')}</p>" for p in paragraphs)


class EmailService:
    """Everything email: the renderer, the store, the SMTP sender and the loop that drains the outbox."""

    def __init__(
        self,
        store: Store,
        renderer: Renderer,
        smtp: SmtpSender,
        *,
        sender: str,
        public_url: str,
        dealer: dict[str, Any],
        clock: Callable[[], datetime] = system_clock,
        max_attempts: int = 6,
        retry_after: timedelta = timedelta(seconds=30),
        window: int = 20,
        lanes: int = 2,
        owner: str = "",
        lease: timedelta = timedelta(minutes=1),
        renew_every: float | None = None,
    ) -> None:
        self.store, self.renderer, self.smtp = store, renderer, smtp
        self.sender = sender
        self.public_url = public_url.rstrip("/")
        self.dealer = dealer
        self.clock = clock
        self.max_attempts, self.retry_after, self.window = max_attempts, retry_after, window
        self.lanes = max(1, lanes)
        self.owner = owner or "email"  # the instance claiming: its rows are its own until the lease ends
        self.lease = lease
        self.lapsed = 0  # outcomes not recorded: the emails' lease had lapsed and another instance took them
        # seconds (of the event loop, not the injected clock) between renewals of the lease
        self.renew_every = renew_every if renew_every is not None else lease.total_seconds() / 3
        self._stopped = asyncio.Event()
        self.domain = parseaddr(sender)[1].partition("@")[2] or "switchboard.local"
        self._wake = asyncio.Event()
        # told the follow-ups whose email failed for good and are calls to make now (the root hands
        # in the follow-up loop's, which tells the assignee's open My Day)
        self.on_followups_to_call: Callable[[list[int]], Awaitable[None]] | None = None

    # templates ------------------------------------------------------------------------------

    def validate(self, name: Any, subject: Any, html: Any, text: Any) -> list[str]:
        """Syntax (with line numbers), the cost of rendering, and the merge codes of a template's parts."""
        for field, value in (("name", name), ("subject", subject), ("html", html)):
            if not isinstance(value, str) or not value.strip():
                raise ValidationError(field, "is required")
        if text is not None and not isinstance(text, str):
            raise ValidationError("text", "must be text")
        codes: set[str] = set()
        for field, value, is_html in (
            ("subject", subject, False),
            ("html", html, True),
            ("text", text or "", False),
        ):
            try:
                codes.update(self.renderer.validate(value, html=is_html).merge_codes)
                self.renderer.check_cost(value, html=is_html)
            except TemplateTooCostly as exc:
                raise ValidationError(field, str(exc), code="template_too_costly") from None
            except TemplateError as exc:
                raise ValidationError(field, str(exc), code="template_syntax") from None
        return sorted(codes)

    def problems(self, subject: str, html: str, text: str) -> dict[str, str]:
        """What is wrong with each part of a draft, by field: syntax, cost, a misspelt merge code
        (an empty part is not a problem yet: saving says it is required)."""
        return self.draft_problems(subject, html, text)[0]

    def draft_problems(self, subject: str, html: str, text: str) -> tuple[dict[str, str], dict[str, str]]:
        """(every problem of a draft by field, the misspelt merge codes alone by field): a misspelt
        code does not stop a save, the rest does."""
        out: dict[str, str] = {}
        misspelt: dict[str, str] = {}
        for field, value, is_html in (
            ("subject", subject, False),
            ("html", html, True),
            ("text", text, False),
        ):
            try:
                codes = self.renderer.validate(value, html=is_html).merge_codes
                self.renderer.check_cost(value, html=is_html)
            except (TemplateTooCostly, TemplateError) as exc:
                out[field] = str(exc)
                continue
            found = unknown_codes(codes)
            if found:
                out[field] = misspelt[field] = unknown_codes_message(found)
        return out, misspelt

    def render(self, template: dict[str, Any], contact: Contact, sender: User | None) -> dict[str, Any]:
        """Subject, HTML and text for one customer, and the merge codes that have no value."""
        ctx = merge_context(contact, sender=sender, dealer=self.dealer, now=self.clock())
        missing = sorted(
            {
                *self.renderer.missing_codes(template["subject"], ctx),
                *self.renderer.missing_codes(template["html"], ctx, html=True),
                *self.renderer.missing_codes(template["text"] or "", ctx),
            }
        )
        if missing:
            return {"subject": None, "html": None, "text": None, "missing": missing}
        field = "subject"
        try:
            subject = self.renderer.render(template["subject"], ctx).strip()
            field = "html"
            html = self.renderer.render(template["html"], ctx, html=True)
            field = "text"
            text = self.renderer.render(template["text"], ctx) if template["text"] else html_to_text(html)
        except MissingMergeCode as exc:
            return {"subject": None, "html": None, "text": None, "missing": [exc.code]}
        except TemplateTooCostly as exc:
            raise ValidationError(field, str(exc), code="template_too_costly") from None
        except TemplateError as exc:
            raise ValidationError(field, str(exc)) from None
        return {"subject": subject, "html": html, "text": text, "missing": []}

    # sending --------------------------------------------------------------------------------

    def _row(
        self,
        template: dict[str, Any],
        contact: Contact,
        sender: User | None,
        at: datetime,
        *,
        close: bool,
        next_followup: str | None,
        followup_id: int | None = None,
    ) -> EmailRow:
        base = dict(
            to_addr=contact.email or "",
            to_name=contact.name,
            message_id=new_message_id(self.domain),
            not_before=at,
            contact_id=contact.id,
            user_id=sender.id if sender else None,
            template_id=template["id"],
            close_followups=close,
            next_followup=next_followup,
            followup_id=followup_id,
        )
        if not contact.email:
            return EmailRow(subject="", html="", text="", state="skipped", reason="no email address", **base)
        if contact.email_opt_out:
            return EmailRow(
                subject="", html="", text="", state="skipped", reason="unsubscribed from email", **base
            )
        try:
            out = self.render(template, contact, sender)
        except ValidationError as exc:
            if exc.code == "template_too_costly":
                raise  # the template's fault, not this customer's: the whole send is refused
            return EmailRow(subject="", html="", text="", state="skipped", reason=exc.reason, **base)
        if out["missing"]:
            return EmailRow(
                subject="",
                html="",
                text="",
                state="skipped",
                reason="missing merge codes: " + ", ".join(out["missing"]),
                **base,
            )
        return EmailRow(subject=out["subject"], html=out["html"], text=out["text"], **base)

    async def send(
        self,
        template_id: int,
        contacts: list[Contact],
        sender: User | None,
        *,
        send_at: datetime | None = None,
        next_followup: str | None = None,
        followup_id: int | None = None,
        edited: tuple[str, str] | None = None,
    ) -> int:
        """Queue a send job (one row per recipient, skipped ones with their reason); its id. An email
        to one customer sent from a follow-up (`followup_id`) closes that follow-up once sent.
        `edited` (one recipient only): the subject and plain text the sender rewrote after the
        preview, sent as written instead of the merged template."""
        template = await self.store.email.template(template_id)
        at = send_at or self.clock()
        single = len(contacts) == 1
        # the template is the sender's own text: render it off the event loop
        rows = await asyncio.to_thread(
            lambda: [
                self._row(
                    template,
                    c,
                    sender,
                    at,
                    close=single and followup_id is not None,
                    next_followup=next_followup,
                    followup_id=followup_id if single else None,
                )
                for c in contacts
            ]
        )
        if edited is not None:
            if not single:
                raise ValidationError("contact_ids", "an edited message goes to one customer")
            subject, text = edited
            if rows[0].state == "queued":
                rows = [dataclasses.replace(rows[0], subject=subject, text=text, html=text_to_html(text))]
        job_id = await self.store.email.create_job(
            template_id=template_id,
            audience={"contact_ids": [c.id for c in contacts]},
            send_at=at,
            next_followup=next_followup,
            user_id=sender.id if sender else None,
            rows=rows,
        )
        self._wake.set()
        return job_id

    def _message(self, email: OutboxEmail, secret: str) -> Outgoing:
        unsubscribe = (
            f"{self.public_url}/email/unsubscribe/{unsubscribe_token(secret, email.contact_id)}"
            if email.contact_id is not None
            else None
        )
        return wire_message(
            sender=self.sender,
            to_addr=email.to_addr,
            to_name=email.to_name,
            subject=email.subject,
            html=email.html,
            text=email.text,
            message_id=email.message_id,
            unsubscribe_url=unsubscribe,
            date=self.clock(),
        )

    def _next_followup(self, email: OutboxEmail) -> Any:
        value = email.next_followup
        if value in (None, "", "cadence"):
            return None  # the cadence rules plan what comes next, not each email
        if value == "none":
            return "none"
        return datetime.fromisoformat(value)

    async def step(self) -> bool:
        """Send one window of due emails over the connection pool; False when nothing was due."""
        window = max(self.window, 4 * getattr(self.smtp, "size", 1))
        # read before claiming: a stop between the claim and the sends below would leave the
        # claimed rows `sending` (in doubt) although none was handed to the mail server
        secret = await self.store.email.secret("unsubscribe")
        claim = asyncio.ensure_future(
            self.store.email.claim(self.clock(), window, owner=self.owner, lease=self.lease)
        )
        try:
            batch = await asyncio.shield(claim)
        except asyncio.CancelledError:
            # stopped while claiming: the claim may commit all the same, and its rows, none handed
            # to the mail server, would stay `sending` and become `unknown`; they go back instead
            try:
                await self.store.email.release([e.id for e in await claim])
            except Exception:  # a claim that failed took nothing; a failed release leaves them in doubt
                log.exception("event=email_release_error")
            raise
        if not batch:
            await self.store.email.finish_jobs()
            return False
        done: list[tuple[OutboxEmail, str, str | None, int | None, Any]] = []
        handed: set[int] = set()  # ids given to the mail server (in doubt if we are cancelled then)
        untouched: list[int] = []  # ids never attempted: back to the queue

        async def one(email: OutboxEmail) -> None:
            try:
                message = self._message(email, secret)
            except Exception as exc:  # this message cannot be built (e.g. a line break in a header)
                reason = str(exc) if isinstance(exc, TemplateError) else f"cannot build the message: {exc!r}"
                log.warning("event=email_refused id=%d reason=%r", email.id, reason)
                done.append((email, "failed", reason, None, None))
                return

            def go() -> bool:  # a connection is free: hand this one over unless we are stopping
                if self._stopped.is_set():
                    return False
                handed.add(email.id)
                return True

            try:
                outcome = await self.smtp.send(message, go=go)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the exchange broke in a way we cannot classify: in doubt
                log.exception("event=email_send_error id=%d", email.id)
                done.append((email, "unknown", f"the mail server exchange failed: {exc!r}", None, None))
                return
            if outcome.status == "not_sent":
                untouched.append(email.id)
            elif outcome.status == "sent":
                done.append((email, "sent", None, None, self._next_followup(email)))
            elif outcome.status == "retry_later" and email.attempts < self.max_attempts:
                delay = self.retry_after * (2 ** (email.attempts - 1))
                await self.store.email.retry_later(
                    email.id, self.clock() + delay, outcome.reason or "", outcome.code
                )
            else:
                done.append((email, "failed", outcome.reason, outcome.code, None))

        try:
            # each message waits for an idle connection of the pool, so the window's order is kept
            await asyncio.gather(*(one(email) for email in batch))
        except asyncio.CancelledError:
            # those in flight stay `sending` (they become `unknown`); the ones never attempted go back
            settled = {e.id for e, *_ in done}
            back = [e.id for e in batch if e.id not in handed and e.id not in settled]
            await asyncio.shield(self.store.email.release(back))
            raise
        finally:
            # what the server accepted is recorded even when the loop is being cancelled
            if done:
                lapsed: list[int] = []
                to_call = await asyncio.shield(
                    self.store.email.settle_many(done, owner=self.owner, lapsed=lapsed)
                )
                if lapsed:
                    # this instance could not renew its lease in time (the database was out of
                    # reach) and another one took these emails as in doubt: not recorded
                    self.lapsed += len(lapsed)
                    log.warning(
                        "event=email_result_after_lease owner=%s rows=%d ids=%s",
                        self.owner, len(lapsed), ",".join(map(str, lapsed[:50])),
                    )  # fmt: skip
                if to_call and self.on_followups_to_call is not None:
                    try:
                        await self.on_followups_to_call(to_call)
                    except Exception:  # telling a page is not worth losing the send loop over
                        log.exception("event=email_followup_notify_error followups=%s", to_call)
        if untouched:
            await self.store.email.release(untouched)
        return True

    async def run(self, idle_poll: float = 1.0) -> None:
        """The send loop: recover what a crash left in doubt, then drain the outbox as it fills.

        Two lanes each claim and settle a window, so one's database work overlaps the other's
        sending (claims are atomic: no row is taken twice; both share the pool and its rates)."""
        n = await self.store.email.recover_after_crash(owner=self.owner)
        if n:
            log.warning("event=email_unknown_after_restart rows=%d", n)
        await run_lanes(
            self.lanes, lambda: self._lane(idle_poll), name="email", beside={"leases": self._keeper}
        )

    async def _lane(self, idle_poll: float) -> None:
        while not self._stopped.is_set():
            try:
                busy = await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event=email_worker_error")
                busy = False
            if not busy:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), idle_poll)
                except TimeoutError:
                    pass

    async def keep_leases(self) -> int:
        """Renew the lease of the emails this instance is sending, then take as in doubt
        (`unknown`) those of an instance that stopped renewing its own; how many were taken."""
        await self.store.email.renew(self.owner, self.clock() + self.lease)
        n = await self.store.email.recover_after_crash(owner=self.owner, starting=False)
        if n:
            log.warning("event=email_unknown_after_lease rows=%d", n)
        return n

    async def _keeper(self) -> None:
        await every(
            self.renew_every, self.keep_leases, stopped=self._stopped, log=log, event="email_lease_error"
        )

    def wake(self) -> None:
        """New work was queued: look at the outbox now rather than at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
