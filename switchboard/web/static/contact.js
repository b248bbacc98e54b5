// The contact page: a one-off text (saved texts, merge codes, live preview).
(function () {
  "use strict";
  const SB = window.SB;
  const card = document.getElementById("contact-card");
  if (!card) return;
  // the Call buttons are common.js's (the same on every page)
  for (const a of document.querySelectorAll(".text-btn")) {
    a.addEventListener("click", (ev) => {
      ev.preventDefault();
      const t = document.querySelector("#sms-send textarea[name=text]");
      if (t) { t.scrollIntoView({ block: "center" }); t.focus(); }
    });
  }

  const form = document.getElementById("sms-send");
  if (!form) return;
  const contactId = Number(form.dataset.contactId);
  const text = form.querySelector("textarea[name=text]");
  const pick = form.querySelector("select[name=template]");
  const box = document.getElementById("sms-preview");
  const out = document.getElementById("sms-result");
  let timer = null;
  async function preview() {
    if (!text.value.trim()) { box.textContent = ""; return; }
    const r = await SB.api("POST", "/api/v1/sms/preview", { text: text.value, contact_id: contactId });
    box.className = r.ok ? "muted" : "error";
    box.textContent = r.ok ? "They will read: “" + r.body.text + "” · " + r.body.segments + " segment" + (r.body.segments === 1 ? "" : "s") : SB.errText(r.body);
  }
  text.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(preview, 300); });
  if (pick) pick.addEventListener("change", () => {
    const opt = pick.selectedOptions[0];
    if (opt && opt.dataset.text) { text.value = opt.dataset.text; preview(); }
  });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    const r = await SB.api("POST", "/api/v1/sms/send", { contact_id: contactId, text: text.value });
    if (!r.ok) { out.className = "error"; out.textContent = SB.errText(r.body); button.disabled = false; return; }
    out.className = "muted"; out.textContent = "Sending to " + SB.phone(r.body.to) + "…";
    // it lands on the history once the gateway takes it
    const deadline = Date.now() + 15000;
    while (Date.now() < deadline) {
      await new Promise((res) => setTimeout(res, 400));
      const h = await SB.api("GET", "/api/v1/contacts/" + contactId + "/touches?limit=5");
      if (h.ok && (h.body.items || []).some((t) => t.source_key === "sms:" + r.body.id)) { location.reload(); return; }
    }
    out.textContent = "Queued; it appears on the history once the gateway accepts it.";
    button.disabled = false;
  });
})();
