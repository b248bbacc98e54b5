// The contact page's consent-to-texts control: record how the customer agreed (now), or withdraw it,
// through PATCH /api/v1/contacts/{id} {sms_consent}; the page reloads to show the new state.
(function () {
  "use strict";
  const SB = window.SB;
  const form = document.getElementById("sms-consent-form");
  if (!form) return;
  const out = document.getElementById("sms-consent-result");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const withdraw = form.dataset.withdraw === "1";
    const body = { sms_consent: withdraw ? null : { source: form.elements.source.value } };
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    const r = await SB.api("PATCH", "/api/v1/contacts/" + form.dataset.contactId, body);
    if (!r.ok) {
      button.disabled = false;
      out.className = "error";
      out.textContent = SB.errText(r.body);
      return;
    }
    out.className = "muted";
    out.textContent = withdraw ? "Consent withdrawn." : "Consent recorded.";
    location.reload();
  });
})();
