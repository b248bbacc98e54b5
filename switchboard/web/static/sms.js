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
    if (!res.ok) {
      // a misspelt merge code is named with the closest known one, before anything is scheduled
      preview.append(el("span", out.error.message, "error" + (out.error.code === "unknown_merge_code" ? " merge-code" : "")));
      return;
    }
    preview.append(el("div", out.text, "summary"));
    preview.append(el("p", out.encoding.toUpperCase() + " · " + out.segments + " segment" + (out.segments === 1 ? "" : "s") + " · about $" + out.cost.toFixed(4) + " each", "muted segments"));
    for (const w of out.warnings) preview.append(el("p", w, "badge warn"));
  }

  // the sample customer: search by name, pick one of the matches
  const matches = document.getElementById("preview-matches");
  const who = document.getElementById("preview-who");
  let searchTimer = null;
  async function search() {
    const q = form.preview_search.value.trim();
    matches.textContent = "";
    if (q.length < 2) return;
    const res = await fetch("/api/v1/contacts?limit=8&q=" + encodeURIComponent(q));
    if (!res.ok) return;
    const data = await res.json();
    if (!data.items.length) { matches.append(el("li", "No customer matches “" + q + "”.", "muted")); return; }
    for (const c of data.items) {
      const li = el("li"); const b = el("button", (c.name || "#" + c.id) + (c.phones && c.phones[0] ? " · " + SB.phone(c.phones[0].e164 || c.phones[0]) : ""), "secondary");
      b.type = "button"; b.dataset.contactId = c.id;
      b.onclick = () => {
        form.preview_contact.value = c.id;
        form.preview_search.value = c.name || "#" + c.id;
        matches.textContent = "";
        who.textContent = "Preview for " + (c.name || "#" + c.id) + ".";
        updatePreview();
      };
      li.append(b); matches.append(li);
    }
  }
  form.preview_search.addEventListener("input", () => {
    if (!form.preview_search.value.trim() && form.preview_contact.value) { form.preview_contact.value = ""; who.textContent = ""; updatePreview(); }
    clearTimeout(searchTimer); searchTimer = setTimeout(search, 200);
  });

  // the audience: who it reaches, who it skips and why, and what quiet hours hold — before scheduling
  const reach = document.getElementById("audience-count");
  function audience() {
    if (form.segment.value) return { segment: Number(form.segment.value) };
    if (form.contact_ids.value.trim()) return { contact_ids: form.contact_ids.value.split(",").map((s) => Number(s.trim())).filter(Boolean) };
    if (form.tag.value.trim()) return { tag: form.tag.value.trim() };
    return null;
  }
  let reachTimer = null;
  async function updateReach() {
    const a = audience();
    reach.textContent = "";
    if (!a) { reach.append(el("span", "Choose an audience to see who it reaches.", "muted")); return; }
    const body = { audience: a };
    if (form.send_at.value) body.send_at = form.send_at.value;
    const res = await post("/api/v1/sms/blasts/dry-run", body);
    const out = await res.json();
    if (!res.ok) { reach.append(el("span", SB.errText(out), "error")); return; }
    const box = el("div", null, "reach");
    box.append(el("strong", out.recipients + " of " + out.audience + " customer" + (out.audience === 1 ? "" : "s") + " will get it", "recipients"));
    if (out.skipped.length) {
      const ul = el("ul", null, "skips");
      for (const s of out.skipped) ul.append(el("li", s.count + " skipped: " + s.reason));
      box.append(ul);
    }
    if (out.held) box.append(el("p", out.held + " held by quiet hours until " + SB.when(out.held_until), "held"));
    reach.append(box);
  }
  for (const name of ["segment", "tag", "contact_ids", "send_at"]) {
    form[name].addEventListener("input", () => { clearTimeout(reachTimer); reachTimer = setTimeout(updateReach, 250); });
  }
  form.text.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(updatePreview, 250); });

  // a survey instead of a text: the text box shows the question it will send (not editable); back
  // to no survey, the text typed before returns
  const surveyNote = document.getElementById("survey-note");
  const textLabel = document.getElementById("text-label");
  const questionLabel = document.getElementById("question-label");
  let typed = form.text.value;
  form.survey_id.addEventListener("change", () => {
    const opt = form.survey_id.selectedOptions[0];
    const asking = Boolean(form.survey_id.value && opt && opt.dataset.text);
    if (asking && !form.text.readOnly) typed = form.text.value;
    form.text.value = asking ? opt.dataset.text : typed;
    form.text.readOnly = asking;
    surveyNote.hidden = !asking;
    textLabel.hidden = asking; questionLabel.hidden = !asking;
    updatePreview();
  });
  updatePreview();

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    errorBox.hidden = true;
    const body = { name: form.name.value, text: form.text.value, channel: form.channel.value, audience: audience() || { tag: "" } };
    if (form.survey_id.value) body.survey_id = Number(form.survey_id.value);
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
      const state = el("td"); state.append(el("span", b.state + (b.pause_reason ? " (" + b.pause_reason + ")" : ""), "state"));
      if (b.held_until && ["running", "scheduled"].includes(b.state)) {
        state.append(el("span", b.held + " held by " + (b.held_reason || "a hold") + " until " + SB.when(b.held_until), "held"));
      }
      tr.append(el("td", b.name), state);
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
