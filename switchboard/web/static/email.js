// Email templates: edit, save with validation, preview against a customer, and (on a contact page) send.
(function () {
  "use strict";
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const api = (method, url, body) => fetch(url, {
    method, headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf }, body: body ? JSON.stringify(body) : undefined,
  }).then(async (r) => ({ ok: r.ok, status: r.status, body: await r.json().catch(() => ({})) }));
  const el = (tag, text, cls) => { const e = document.createElement(tag); if (text != null) e.textContent = String(text); if (cls) e.className = cls; return e; };
  const errText = (b) => (b.error ? (b.error.field ? b.error.field + ": " : "") + b.error.message : "failed");

  function showPreview(box, out) {
    box.textContent = "";
    if (out.missing && out.missing.length) {
      box.append(el("p", "Missing for this customer: " + out.missing.join(", "), "error missing"));
      return false;
    }
    box.append(el("p", "To: " + (out.to || "(no email address)"), "muted preview-to"));
    box.append(el("h3", out.subject, "preview-subject"));
    const frame = document.createElement("iframe");
    frame.setAttribute("sandbox", "");
    frame.className = "preview-html";
    frame.style.width = "100%"; frame.style.minHeight = "220px"; frame.style.border = "1px solid #dde2ea";
    frame.srcdoc = out.html;
    box.append(frame);
    return true;
  }

  // the templates page
  const form = document.getElementById("template-form");
  if (form) {
    document.querySelectorAll("#template-list a[data-id]").forEach((a) => a.addEventListener("click", async (ev) => {
      ev.preventDefault();
      const r = await api("GET", "/api/v1/email/templates/" + a.dataset.id);
      for (const k of ["id", "name", "subject", "html", "text"]) form[k].value = r.body[k] || "";
      document.getElementById("editor-title").textContent = "Edit " + r.body.name;
      form.dispatchEvent(new Event("template-loaded"));
    }));
    // before saving, the draft is checked: a misspelt merge code (it would print nothing for the
    // customer) is shown under its field and saved only when the user says "Save anyway"
    const anyway = document.getElementById("save-anyway");
    let confirmed = false;
    anyway.addEventListener("click", () => { confirmed = true; form.requestSubmit(); });
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const out = document.getElementById("save-result");
      const body = { name: form.name.value, subject: form.subject.value, html: form.html.value, text: form.text.value };
      if (!confirmed) {
        const c = await api("POST", "/api/v1/email/preview", { subject: body.subject, html: body.html, text: body.text });
        const problems = c.ok ? c.body.problems || {} : {};
        const fields = Object.keys(problems);
        if (fields.length) {
          showProblems(problems);
          const onlyCodes = fields.every((f) => (c.body.unknown_codes || {})[f]);
          out.className = "error";
          out.textContent = onlyCodes
            ? "Not saved yet: a merge code above is not one we know, so it would print nothing. Fix it, or save anyway."
            : "Not saved: fix the marked field first.";
          anyway.hidden = !onlyCodes;
          form[fields[0]].focus();
          return;
        }
      }
      confirmed = false; anyway.hidden = true;
      const r = form.id.value ? await api("PUT", "/api/v1/email/templates/" + form.id.value, body)
        : await api("POST", "/api/v1/email/templates", body);
      if (r.ok) { form.id.value = r.body.id; out.className = "muted"; out.textContent = "Saved. Merge codes: " + r.body.merge_codes.join(", "); }
      else { out.className = "error"; out.textContent = errText(r.body); }
    });
    // the preview follows the editor: a draft rendered for the chosen customer, debounced; what is
    // wrong with a part (a misspelt merge code, a syntax error) shows under that field
    const pform = document.getElementById("preview-form");
    const box = document.getElementById("preview");
    const state = document.getElementById("preview-state");
    const options = document.getElementById("preview-customers");
    const FIELDS = ["subject", "html", "text"];
    let customer = null, timer = null, seq = 0;
    function customerId() {
      const v = pform.customer.value.trim();
      const m = /#(\d+)$/.exec(v) || /^(\d+)$/.exec(v);
      return m ? Number(m[1]) : null;
    }
    function showProblems(problems) {
      for (const f of FIELDS) {
        const p = document.getElementById(f + "-problem");
        p.textContent = problems[f] || ""; p.hidden = !problems[f];
        if (problems[f]) form[f].setAttribute("aria-invalid", "true"); else form[f].removeAttribute("aria-invalid");
      }
    }
    async function refresh() {
      const mine = ++seq;
      const body = { subject: form.subject.value, html: form.html.value, text: form.text.value };
      if (customer) body.contact_id = customer;
      const r = await api("POST", "/api/v1/email/preview", body);
      if (mine !== seq) return; // a later edit's answer wins
      if (!r.ok) { state.className = "error"; state.textContent = errText(r.body); return; }
      showProblems(r.body.problems || {});
      if (Object.keys(r.body.problems || {}).length) {
        state.className = "muted"; state.textContent = "Fix the marked field; the preview resumes as you type.";
        return;
      }
      if (!customer) { state.className = "muted"; state.textContent = "Choose a customer: the preview follows your edits as you type."; box.textContent = ""; return; }
      state.className = "muted"; state.textContent = "For " + (r.body.contact_name || "#" + customer) + ", as you type.";
      const frame = box.querySelector("iframe.preview-html");
      if (frame && !(r.body.missing || []).length && box.dataset.shown === "yes") {
        box.querySelector(".preview-to").textContent = "To: " + (r.body.to || "(no email address)");
        box.querySelector(".preview-subject").textContent = r.body.subject;
        frame.srcdoc = r.body.html;
        return;
      }
      box.dataset.shown = showPreview(box, r.body) ? "yes" : "no";
    }
    const later = (ms) => { clearTimeout(timer); timer = setTimeout(refresh, ms); };
    for (const f of FIELDS) form[f].addEventListener("input", () => later(400));
    let searchTimer = null;
    pform.customer.addEventListener("input", () => {
      const id = customerId();
      if (id) { customer = id; later(0); return; }
      clearTimeout(searchTimer);
      searchTimer = setTimeout(async () => {
        const q = pform.customer.value.trim();
        if (q.length < 2) return;
        const r = await api("GET", "/api/v1/contacts?limit=8&q=" + encodeURIComponent(q));
        if (!r.ok) return;
        options.textContent = "";
        for (const c of r.body.items || []) {
          const o = document.createElement("option");
          o.value = (c.name || "(no name)") + (c.phones && c.phones[0] ? " · " + window.SB.phone(c.phones[0].e164) : "") + " · #" + c.id;
          options.append(o);
        }
      }, 250);
    });
    pform.addEventListener("submit", (ev) => {
      ev.preventDefault();
      customer = customerId();
      if (!customer) { state.className = "error"; state.textContent = "Pick a customer from the suggestions, or give their id."; return; }
      later(0);
    });
    form.addEventListener("input", () => { document.getElementById("save-result").textContent = ""; anyway.hidden = true; confirmed = false; });
    form.addEventListener("template-loaded", () => later(0));
    later(0);
  }

  // the contact page: pick a template, preview, send
  const send = document.getElementById("email-send");
  if (send) {
    const contactId = Number(send.dataset.contactId);
    const select = send.querySelector("select[name=template_id]");
    const box = document.getElementById("email-preview");
    const button = send.querySelector("button[type=submit]");
    // after the preview, the merged subject and text are editable; what is in them is what is sent
    const edit = document.getElementById("email-edit");
    const note = edit.querySelector(".edited-note");
    let merged = null;
    const isEdited = () => merged !== null && (send.subject.value !== merged.subject || send.text.value !== merged.text);
    for (const f of [send.subject, send.text]) f.addEventListener("input", () => { note.hidden = !isEdited(); });
    select.addEventListener("change", async () => {
      button.disabled = true; edit.hidden = true; merged = null;
      if (!select.value) { box.textContent = ""; return; }
      const r = await api("POST", "/api/v1/email/templates/" + select.value + "/preview", { contact_id: contactId });
      if (!r.ok) { box.textContent = errText(r.body); return; }
      const ok = showPreview(box, r.body);
      button.disabled = !ok || !r.body.to || r.body.email_opt_out;
      if (ok) {
        merged = { subject: r.body.subject, text: r.body.text || "" };
        send.subject.value = merged.subject; send.text.value = merged.text;
        note.hidden = true; edit.hidden = false;
      }
    });
    send.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const body = { template_id: Number(select.value), contact_ids: [contactId] };
      if (isEdited()) { body.subject = send.subject.value; body.text = send.text.value; }
      const when = send.querySelector("input[name=next_followup_at]").value;
      if (when) body.next_followup_at = window.SB.localInputToIso(when);
      const r = await api("POST", "/api/v1/email/send", body);
      const out = document.getElementById("email-result");
      if (!r.ok) { out.className = "error"; out.textContent = errText(r.body); return; }
      out.className = "muted"; out.textContent = "Queued; it appears on the history once the mail server accepts it.";
      button.disabled = true;
      const job = r.body.id;
      for (let i = 0; i < 40; i++) {
        await new Promise((res) => setTimeout(res, 250));
        const j = await api("GET", "/api/v1/email/jobs/" + job);
        if (j.ok && j.body.state === "done") { location.reload(); return; }
      }
    });
  }
})();
