// The blast page: live preview while typing, scheduling, and progress that moves without a reload.
(function () {
  "use strict";
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const form = document.getElementById("blast-form");
  const preview = document.getElementById("preview");
  const errorBox = document.getElementById("form-error");
  const tbody = document.querySelector("#blasts tbody");
  const post = (url, body) => fetch(url, {
    method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf }, body: JSON.stringify(body),
  });
  function el(tag, text, cls) { const e = document.createElement(tag); if (text != null) e.textContent = String(text); if (cls) e.className = cls; return e; }

  let timer = null;
  async function updatePreview() {
    const body = { text: form.text.value };
    if (form.preview_contact.value) body.contact_id = Number(form.preview_contact.value);
    const res = await post("/api/v1/sms/preview", body);
    const out = await res.json();
    preview.textContent = "";
    if (!res.ok) { preview.append(el("span", out.error.message, "error")); return; }
    preview.append(el("div", out.text, "summary"));
    preview.append(el("p", out.encoding.toUpperCase() + " · " + out.segments + " segment" + (out.segments === 1 ? "" : "s") + " · about $" + out.cost.toFixed(4) + " each", "muted segments"));
    for (const w of out.warnings) preview.append(el("p", w, "badge warn"));
  }
  form.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(updatePreview, 250); });

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    errorBox.hidden = true;
    const audience = form.contact_ids.value.trim()
      ? { contact_ids: form.contact_ids.value.split(",").map((s) => Number(s.trim())).filter(Boolean) }
      : { tag: form.tag.value.trim() };
    const body = { name: form.name.value, text: form.text.value, channel: form.channel.value, audience };
    if (form.send_at.value) body.send_at = form.send_at.value;
    if (form.cron.value.trim()) body.cron = form.cron.value.trim();
    if (form.rate_per_second.value) body.rate_per_second = Number(form.rate_per_second.value);
    const res = await post("/api/v1/sms/blasts", body);
    const out = await res.json();
    if (!res.ok) { errorBox.textContent = (out.error.field ? out.error.field + ": " : "") + out.error.message; errorBox.hidden = false; return; }
    refresh();
  });

  async function control(id, action) { await post("/api/v1/sms/blasts/" + id + "/" + action, {}); refresh(); }

  async function refresh() {
    const res = await fetch("/api/v1/sms/blasts");
    if (!res.ok) return;
    const data = await res.json();
    tbody.textContent = "";
    for (const b of data.items) {
      const tr = el("tr"); tr.dataset.blastId = b.id;
      const c = b.counts;
      const done = c.sent + c.delivered + c.failed + c.skipped + c.unknown;
      const pct = b.total ? Math.round((100 * done) / b.total) : 0;
      tr.append(el("td", b.name), el("td", b.state + (b.pause_reason ? " (" + b.pause_reason + ")" : ""), "state"));
      const bar = el("td"); const p = el("div", null, "progress"); const s = el("span"); s.style.width = pct + "%"; p.append(s);
      bar.append(p, el("span", done + "/" + b.total + " · " + b.segments + " segments · $" + b.cost_estimate, "muted progress-text")); tr.append(bar);
      tr.append(el("td", c.sent + c.delivered, "sent"), el("td", c.delivered, "delivered"), el("td", c.failed, "failed"), el("td", c.skipped, "skipped"));
      const actions = el("td");
      for (const [action, states] of [["pause", ["scheduled", "running"]], ["resume", ["paused"]], ["cancel", ["scheduled", "running", "paused"]]]) {
        if (states.includes(b.state)) { const btn = el("button", action, "secondary"); btn.type = "button"; btn.onclick = () => control(b.id, action); actions.append(btn, " "); }
      }
      tr.append(actions);
      tbody.append(tr);
    }
  }
  refresh();
  setInterval(refresh, 1500);
})();
