// Shared by every page: one time format in the user's zone, phone numbers as people write them,
// and tables that read as labelled cards on a phone.
(function () {
  "use strict";
  const meta = (name) => (document.querySelector('meta[name="' + name + '"]') || {}).content || "";
  const zone = meta("sb-zone") || "UTC";
  const region = meta("sb-region") || "US";
  let parts;
  try {
    parts = new Intl.DateTimeFormat("en-GB", {
      timeZone: zone, weekday: "short", day: "2-digit", month: "short", year: "numeric",
      hour: "2-digit", minute: "2-digit", hourCycle: "h23",
    });
  } catch (e) {
    parts = new Intl.DateTimeFormat("en-GB", { weekday: "short", day: "2-digit", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  }
  // the same shape as the server's `when` filter: "Wed 02 Dec 2026 06:37"
  function when(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    if (isNaN(d)) return String(iso);
    const p = {};
    for (const x of parts.formatToParts(d)) p[x.type] = x.value;
    return p.weekday + " " + p.day + " " + p.month + " " + p.year + " " + p.hour + ":" + p.minute;
  }
  const numeric = (() => {
    try { return new Intl.DateTimeFormat("en-US", { timeZone: zone, year: "numeric", month: "numeric", day: "numeric", hour: "numeric", minute: "numeric", second: "numeric", hourCycle: "h23" }); }
    catch (e) { return null; }
  })();
  function offsetAt(t) {
    if (!numeric) return -new Date(t).getTimezoneOffset() * 60000;
    const p = {};
    for (const x of numeric.formatToParts(new Date(t))) p[x.type] = Number(x.value);
    return Date.UTC(p.year, p.month - 1, p.day, p.hour % 24, p.minute, p.second) - Math.floor(t / 1000) * 1000;
  }
  // a value of <input type=datetime-local>, read as wall time in the user's zone, as ISO UTC
  function localInputToIso(value) {
    const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})/.exec(value || "");
    if (!m) return null;
    const naive = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5]);
    let t = naive - offsetAt(naive);
    t = naive - offsetAt(t);
    return new Date(t).toISOString();
  }
  // NANP numbers in national format in a US/CA dealership; others international with spaces kept as sent
  function phone(e164) {
    if (!e164) return "";
    const m = /^\+1(\d{3})(\d{3})(\d{4})$/.exec(e164);
    if (m && (region === "US" || region === "CA")) return "(" + m[1] + ") " + m[2] + "-" + m[3];
    return e164;
  }
  function api(method, url, body) {
    return fetch(url, {
      method, headers: { "Content-Type": "application/json", "X-CSRF-Token": meta("csrf-token") },
      body: body ? JSON.stringify(body) : undefined,
    }).then(async (r) => ({ ok: r.ok, status: r.status, body: await r.json().catch(() => ({})) }));
  }
  const errText = (b) => (b && b.error ? (b.error.field ? b.error.field + ": " : "") + b.error.message : "failed");

  function label(table) {
    const heads = Array.from(table.querySelectorAll("thead th")).map((th) => th.textContent.trim());
    for (const tr of table.querySelectorAll("tbody tr")) {
      Array.from(tr.children).forEach((td, i) => { if (heads[i] && !td.dataset.label) td.dataset.label = heads[i]; });
    }
  }
  function labelAll() { document.querySelectorAll("table.stack").forEach(label); }
  document.addEventListener("DOMContentLoaded", () => {
    labelAll();
    for (const t of document.querySelectorAll("table.stack tbody")) {
      new MutationObserver(() => label(t.closest("table"))).observe(t, { childList: true });
    }
    for (const el of document.querySelectorAll("[data-when]")) el.textContent = when(el.dataset.when);
  });
  // Call buttons on every page: click-to-call through POST /api/v1/calls (the rep's desk phone rings
  // first), or a tel: link where this user has no desk phone; the outcome shows beside the page's
  // #call-result, else in a small status line at the bottom of the screen.
  const callMode = meta("sb-call");
  function callButton(number, contactId, name) {
    if (!number || !callMode) return null;
    const label = "Call " + (name || "customer") + " on " + phone(number);
    let b;
    if (callMode === "click") {
      b = document.createElement("button"); b.type = "button"; b.className = "small call-btn";
      b.dataset.number = number;
      if (contactId) b.dataset.contactId = String(contactId);
    } else {
      b = document.createElement("a"); b.className = "button small secondary call-tel"; b.href = "tel:" + number;
    }
    b.textContent = "Call"; b.setAttribute("aria-label", label);
    return b;
  }
  function callStatus() {
    let out = document.getElementById("call-result");
    if (out) return out;
    out = document.getElementById("call-status");
    if (!out) {
      out = document.createElement("p"); out.id = "call-status"; out.setAttribute("role", "status");
      out.setAttribute("aria-live", "polite"); document.body.append(out);
    }
    return out;
  }
  document.addEventListener("click", async (ev) => {
    const b = ev.target.closest && ev.target.closest("button.call-btn[data-number]");
    if (!b || b.disabled) return;
    const out = callStatus();
    const body = { number: b.dataset.number };
    if (b.dataset.contactId) body.contact_id = Number(b.dataset.contactId);
    b.disabled = true;
    out.hidden = false; out.className = "muted call-status"; out.textContent = "Calling " + phone(b.dataset.number) + "… your phone rings first.";
    const r = await api("POST", "/api/v1/calls", body);
    b.disabled = false;
    if (!r.ok) { out.className = "error call-status"; out.textContent = errText(r.body); return; }
    out.textContent = "Your phone is ringing; pick up to be connected to " + phone(b.dataset.number) + ".";
  });
  window.SB = { when, phone, api, errText, zone, localInputToIso, callButton };
})();
