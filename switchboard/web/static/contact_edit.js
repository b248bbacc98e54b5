// The contact page's edit form (managers, admins): fields and the owner, through PATCH /api/v1/contacts/{id};
// a new owner takes the customer's open follow-ups with them (the API moves them and says how many).
(function () {
  "use strict";
  const SB = window.SB;
  const form = document.getElementById("contact-edit");
  if (!form) return;
  const out = document.getElementById("contact-edit-result");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {};
    for (const name of ["first_name", "last_name", "email"]) body[name] = form.elements[name].value.trim() || null;
    body.owner = form.elements.owner.value || null;
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    const r = await SB.api("PATCH", "/api/v1/contacts/" + form.dataset.contactId, body);
    button.disabled = false;
    if (!r.ok) { out.className = "error"; out.textContent = SB.errText(r.body); return; }
    const moved = r.body.followups_moved || 0;
    out.className = "muted";
    out.textContent = "Saved." + (moved ? " " + moved + " open follow-up" + (moved === 1 ? "" : "s") + " moved to the new owner." : "");
    setTimeout(() => location.reload(), 800);
  });
})();
