// The rep's live call panel: listens on /ws/agent and shows the caller's record without a reload.
(function () {
  "use strict";
  const panel = document.getElementById("pops");
  const state = document.getElementById("ws-state");
  const template = document.getElementById("pop-template");
  if (!panel || !template) return;
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const pops = new Map();
  let retry = 500;

  function text(el, value) { el.textContent = value == null ? "" : String(value); }
  const fmt = (iso) => window.SB.when(iso);

  const byCaller = new Map();
  function render(msg) {
    const call = msg.call;
    const caller = (call.direction === "outbound" ? call.to : call.from) || call.id;
    let el = pops.get(call.id) || byCaller.get(caller);
    if (!el) {
      el = template.content.firstElementChild.cloneNode(true);
      panel.prepend(el);
      el.querySelector(".pop-note").addEventListener("submit", (ev) => saveNote(ev, el.dataset.callId, el));
      el.querySelector(".pop-dismiss").addEventListener("click", () => {
        el.remove(); byCaller.delete(caller);
        for (const [k, v] of pops) if (v === el) pops.delete(k);
        const none = document.getElementById("no-calls"); if (none && !panel.querySelector(".pop")) none.hidden = false;
      });
    } else if (el.dataset.callId !== call.id) {
      panel.prepend(el);  // the same caller rang again: one item, moved to the top
      el.dataset.rings = String(Number(el.dataset.rings || "1") + 1);
    }
    el.dataset.callId = call.id;
    pops.set(call.id, el); byCaller.set(caller, el);
    const none = document.getElementById("no-calls");
    if (none) none.hidden = true;
    const number = call.direction === "outbound" ? call.to : call.from;
    const contact = msg.contact;
    const choices = el.querySelector(".pop-choices");
    choices.textContent = "";
    if (contact) {
      const a = document.createElement("a");
      a.href = contact.url; text(a, contact.name || number);
      const name = el.querySelector(".pop-name"); name.textContent = ""; name.append(a);
      text(el.querySelector(".pop-owner"), contact.owner_name ? "Owner: " + contact.owner_name : "No owner");
    } else if (msg.candidates && msg.candidates.length) {
      text(el.querySelector(".pop-name"), "Several customers share " + number);
      for (const c of msg.candidates) {
        const a = document.createElement("a"); a.href = c.url; text(a, c.name); a.className = "button secondary";
        choices.append(a, document.createTextNode(" "));
      }
    } else {
      text(el.querySelector(".pop-name"), "Unknown caller");
      const a = document.createElement("a");
      a.href = "/contacts/new?phone=" + encodeURIComponent(number || "") + "&call_id=" + encodeURIComponent(call.id || "");
      a.className = "button new-prospect"; text(a, "New prospect");
      choices.append(a);
      text(el.querySelector(".pop-owner"), "");
    }
    // an ended or missed call offers a call back (shown by setState)
    const back = el.querySelector(".pop-callback");
    const cb = back && window.SB.callButton(number, contact ? contact.id : null, contact ? contact.name : number);
    if (back) back.textContent = "";
    if (cb) { cb.textContent = "Call back"; back.append(cb); }
    text(el.querySelector(".pop-number"), (call.direction || "") + " · " + window.SB.phone(number || "") + (call.line ? " · to " + call.line : "") + (call.queue ? " · queue " + call.queue : "") + (el.dataset.rings ? " · rang " + el.dataset.rings + " times" : ""));
    const touches = el.querySelector(".pop-touches"); touches.textContent = "";
    for (const t of msg.recent_touches || []) {
      const li = document.createElement("li");
      text(li, fmt(t.at) + " · " + t.kind + " " + (t.direction || "") + " · " + (t.summary || t.status || ""));
      touches.append(li);
    }
    const fu = el.querySelector(".pop-followups"); fu.textContent = "";
    for (const f of msg.open_followups || []) {
      const li = document.createElement("li"); text(li, "Due " + fmt(f.due_at) + " · " + (f.note || f.kind)); fu.append(li);
    }
    const box = el.querySelector(".pop-survey");
    if (box && msg.survey && contact && window.SBSurvey && box.dataset.for !== call.id) {
      box.dataset.for = call.id;  // the survey this call asks (its list's, or its cadence step's)
      window.SBSurvey.render(box, msg.survey, { contactId: contact.id, target: () => ({ call_id: el.dataset.callId }) });
    }
    setState(el, call.state);
  }

  // the talk timer runs from the answer to the end; an ended call is in wrap-up until dismissed
  function tick() {
    for (const el of panel.querySelectorAll(".pop[data-answered-at]")) {
      const end = Number(el.dataset.endedAt || Date.now());
      const s = Math.max(0, Math.round((end - Number(el.dataset.answeredAt)) / 1000));
      text(el.querySelector(".pop-timer"), Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0"));
    }
  }
  setInterval(tick, 1000);
  const WORDS = { ringing: "ringing", answered: "talking", ended: "wrap-up", missed: "missed" };
  function setState(el, s) {
    const badge = el.querySelector(".pop-state");
    text(badge, WORDS[s] || s);
    badge.className = "pop-state badge " + (s === "answered" ? "ok" : s === "missed" ? "bad" : s === "ended" ? "warn" : "");
    if (s === "answered" && !el.dataset.answeredAt) { el.dataset.answeredAt = String(Date.now()); delete el.dataset.endedAt; }
    if (s === "ringing") { delete el.dataset.answeredAt; delete el.dataset.endedAt; text(el.querySelector(".pop-timer"), ""); }
    if ((s === "ended" || s === "missed") && el.dataset.answeredAt && !el.dataset.endedAt) el.dataset.endedAt = String(Date.now());
    el.classList.toggle("ended", s === "ended" || s === "missed");
    el.querySelector(".pop-dismiss").hidden = !(s === "ended" || s === "missed");
    const back = el.querySelector(".pop-callback");
    if (back) back.hidden = !((s === "ended" || s === "missed") && back.childElementCount);
    tick();
  }

  // one save at a time (a second click while one is on its way does nothing; saving again later
  // moves the call's one follow-up, never adds a second); a refused field is marked where it is
  async function saveNote(ev, callId, el) {
    ev.preventDefault();
    const form = ev.target;
    const button = form.querySelector("button[type=submit]");
    if (button.disabled) return;
    const out = el.querySelector(".pop-saved");
    const fieldError = el.querySelector(".pop-field-error");
    const when = form.next_followup_at;
    if (!fieldError.id) { fieldError.id = "pop-error-" + Math.random().toString(36).slice(2); when.setAttribute("aria-describedby", fieldError.id); }
    when.removeAttribute("aria-invalid"); fieldError.hidden = true; text(fieldError, ""); text(out, "saving…");
    const body = { summary: form.summary.value, disposition: form.disposition.value || null };
    if (when.value) body.next_followup_at = window.SB.localInputToIso(when.value);
    button.disabled = true;
    try {
      const res = await fetch("/api/v1/calls/" + encodeURIComponent(callId) + "/disposition", {
        method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf }, body: JSON.stringify(body),
      });
      if (res.ok) { text(out, "saved"); return; }
      const e = (await res.json().catch(() => ({}))).error || {};
      if (e.field === "next_followup_at") {
        text(out, "");
        text(fieldError, "Next follow-up " + (e.message || "is not a usable time")); fieldError.hidden = false;
        when.setAttribute("aria-invalid", "true"); when.focus();
      } else {
        text(out, e.message ? (e.field ? e.field + ": " : "") + e.message : "not saved");
      }
    } catch (err) {
      text(out, "not saved: the server cannot be reached");
    } finally {
      button.disabled = false;
    }
  }

  function connect() {
    const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/agent");
    ws.onopen = () => { retry = 500; text(state, "live"); state.className = "badge ok"; };
    ws.onmessage = (ev) => {
      const msg = JSON.parse(ev.data);
      if (msg.type === "screen_pop") render(msg);
      else if (msg.type === "call_update") {
        const el = pops.get(msg.call.id);
        if (el) setState(el, msg.call.state);
      }
    };
    ws.onclose = () => {
      text(state, "reconnecting…"); state.className = "badge warn";
      setTimeout(connect, retry); retry = Math.min(retry * 2, 10000);
    };
  }
  connect();
})();
