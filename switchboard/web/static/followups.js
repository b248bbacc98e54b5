// My Day's follow-ups: done / no answer / reschedule / hand off / claim over the JSON API, and live
// changes from the hub (a claimed pool follow-up leaves everyone else's day; a hand-off shows a toast).
(function () {
  "use strict";
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  function toast(text) {
    const box = document.getElementById("toasts");
    if (!box) return;
    const t = document.createElement("div");
    t.className = "toast";
    t.textContent = text;
    box.appendChild(t);
    setTimeout(() => t.remove(), 15000);
  }

  async function act(li, action, body) {
    const msg = li.querySelector(".fu-msg");
    const resp = await fetch(`/api/v1/followups/${li.dataset.id}/${action}`, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body),
    });
    const data = await resp.json().catch(() => ({}));
    if (!resp.ok) {
      msg.textContent = (data.error && data.error.message) || `failed (${resp.status})`;
      msg.classList.add("error");
      return null;
    }
    return data;
  }

  function localToIso(value) {
    return value ? new Date(value).toISOString() : "";
  }

  document.addEventListener("click", async (ev) => {
    const btn = ev.target.closest("button");
    const li = btn && btn.closest("li.followup");
    if (!li) return;
    const val = (sel) => (li.querySelector(sel) || {}).value || "";
    let data = null;
    if (btn.classList.contains("fu-done")) {
      data = await act(li, "done", { result: val(".fu-result") || "done" });
      if (data) li.remove();
    } else if (btn.classList.contains("fu-noanswer")) {
      data = await act(li, "no-answer", {});
      if (data) { li.remove(); toast(data.escalated_reason ? `Escalated: ${data.escalated_reason}` : "No answer: it comes back later"); }
    } else if (btn.classList.contains("fu-reschedule")) {
      data = await act(li, "reschedule", { due_at: localToIso(val(".fu-when")) });
      if (data) li.remove();
    } else if (btn.classList.contains("fu-handoff")) {
      data = await act(li, "handoff", { to: val(".fu-to"), note: val(".fu-note") });
      if (data) li.remove();
    } else if (btn.classList.contains("fu-claim")) {
      data = await act(li, "claim", {});
      // now yours: the day is drawn again, so it shows as yours (the others' days drop it live)
      if (data) { btn.remove(); li.dataset.pool = ""; li.classList.add("claimed"); refreshDay(); }
    }
  });

  // My Day re-fetches itself and swaps its "Due today" section in place when the hub says the day
  // changed (a missed call, a reply, a follow-up handed over or claimed away). Calls in flight are
  // coalesced: one fetch at a time, one more after it if something changed meanwhile.
  let refreshing = false;
  let again = false;
  async function refreshDay() {
    const day = document.getElementById("day");
    if (!day) return;
    if (refreshing) { again = true; return; }
    refreshing = true;
    try {
      const resp = await fetch(location.pathname, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (resp.ok) {
        const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
        const fresh = doc.getElementById("day");
        if (fresh) day.replaceChildren(...Array.from(fresh.childNodes).map((n) => document.importNode(n, true)));
      }
    } catch (e) {
      // the next day_changed (or a reload) catches up
    } finally {
      refreshing = false;
      if (again) { again = false; refreshDay(); }
    }
  }

  function connect() {
    const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/agent");
    ws.onmessage = (m) => {
      let msg;
      try { msg = JSON.parse(m.data); } catch (e) { return; }
      if (msg.type === "day_changed") {
        refreshDay();
      } else if (msg.type === "followup.claimed") {
        const li = document.getElementById(`followup-${msg.id}`);
        if (li) li.remove();
        toast(`${msg.by} took a pool follow-up`);
      } else if (msg.type === "followup.handoff") {
        const f = msg.followup || {};
        toast(`${msg.by} handed you ${f.contact_name || "a customer"}${msg.note ? ": " + msg.note : ""}`);
      } else if (msg.type === "followup.assigned") {
        const f = msg.followup || {};
        toast(`New follow-up: ${f.contact_name || "a customer"}${f.escalated_reason ? " (" + f.escalated_reason + ")" : ""}`);
      } else if (msg.type === "followup.reassigned") {
        toast(`${msg.count} follow-up(s) moved to you`);
      }
    };
    ws.onclose = () => setTimeout(connect, 2000);
  }
  if (document.querySelector("li.followup") !== null || document.getElementById("toasts")) connect();
})();
