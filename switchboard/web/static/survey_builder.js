// The manager's survey builder: questions added, reordered and removed, types, options, "ask only
// when" (show_if) and "dissatisfied when", saved as JSON to /api/v1/surveys (a new version on edit).
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const form = $("survey-builder");
  if (!form) return;
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const list = $("questions");
  const tpl = $("question-template");
  let editing = null;

  const OPS = {
    scale: [["lte", "at most"], ["gte", "at least"], ["eq", "exactly"], ["lt", "below"], ["gt", "above"], ["ne", "not"]],
    choice: [["eq", "is"], ["ne", "is not"]],
    multi: [["contains", "includes"], ["answered", "has any answer"]],
    yes_no: [["eq", "is"]],
    text: [["answered", "is filled in"]],
  };
  const slug = (s) => s.toLowerCase().replace(/[^a-z0-9]+/g, "_").replace(/^_+|_+$/g, "").replace(/^(\d)/, "q_$1").slice(0, 40);
  const items = () => [...list.querySelectorAll("li.builder-q")];
  const keyOf = (li) => li.querySelector("[name=key]").value.trim() || slug(li.querySelector("[name=text]").value) ;

  function fillOps(sel, type, keep) {
    sel.textContent = "";
    for (const [v, label] of OPS[type] || []) { const o = document.createElement("option"); o.value = v; o.textContent = label; sel.append(o); }
    if (keep && [...sel.options].some((o) => o.value === keep)) sel.value = keep;
  }
  function typeOfKey(key) { const li = items().find((x) => keyOf(x) === key); return li ? li.querySelector("[name=type]").value : null; }

  // the "ask only when" of a question offers the questions before it; "dissatisfied when" all
  function refreshConditions() {
    const all = items();
    all.forEach((li, i) => {
      const type = li.querySelector("[name=type]").value;
      li.querySelector(".scale-only").hidden = type !== "scale";
      for (const x of li.querySelectorAll(".scale-only")) x.hidden = type !== "scale";
      li.querySelector(".options-only").hidden = !(type === "choice" || type === "multi");
      keySelect(li.querySelector("[name=show_key]"), all.slice(0, i), "always");
      const k = li.querySelector("[name=show_key]").value;
      fillOps(li.querySelector("[name=show_op]"), k ? typeOfKey(k) : "", li.querySelector("[name=show_op]").value);
      li.querySelector("[name=show_op]").disabled = li.querySelector("[name=show_value]").disabled = !k;
      li.querySelector(".up").disabled = i === 0; li.querySelector(".down").disabled = i === all.length - 1;
    });
    keySelect(form.dis_key, all, "never");
    fillOps(form.dis_op, form.dis_key.value ? typeOfKey(form.dis_key.value) : "", form.dis_op.value);
    form.dis_op.disabled = form.dis_value.disabled = !form.dis_key.value;
  }
  function keySelect(sel, lis, none) {
    const keep = sel.dataset.want || sel.value;
    sel.textContent = "";
    const o = document.createElement("option"); o.value = ""; o.textContent = none; sel.append(o);
    for (const li of lis) { const k = keyOf(li); if (!k) continue; const op = document.createElement("option"); op.value = k; op.textContent = k; sel.append(op); }
    if ([...sel.options].some((x) => x.value === keep)) { sel.value = keep; delete sel.dataset.want; }
  }

  function addQuestion(q) {
    const li = tpl.content.firstElementChild.cloneNode(true);
    q = q || { type: "scale", min: 1, max: 5 };
    li.querySelector("[name=text]").value = q.text || "";
    li.querySelector("[name=key]").value = q.key || "";
    li.querySelector("[name=type]").value = q.type;
    li.querySelector("[name=min]").value = q.min != null ? q.min : 1;
    li.querySelector("[name=max]").value = q.max != null ? q.max : 5;
    li.querySelector("[name=required]").checked = Boolean(q.required);
    li.querySelector("[name=options]").value = (q.options || []).join("\n");
    if (q.show_if && q.show_if.key) {
      li.querySelector("[name=show_key]").dataset.want = q.show_if.key;
      const op = li.querySelector("[name=show_op]"); fillOps(op, "scale"); fillOps(op, "multi"); op.dataset.want = q.show_if.op;
      li.querySelector("[name=show_value]").value = Array.isArray(q.show_if.value) ? q.show_if.value.join(", ") : (q.show_if.value == null ? "" : String(q.show_if.value));
    }
    li.querySelector(".up").addEventListener("click", () => { if (li.previousElementSibling) list.insertBefore(li, li.previousElementSibling); refreshConditions(); });
    li.querySelector(".down").addEventListener("click", () => { if (li.nextElementSibling) list.insertBefore(li.nextElementSibling, li); refreshConditions(); });
    li.querySelector(".remove").addEventListener("click", () => { li.remove(); refreshConditions(); });
    list.append(li);
    refreshConditions();
    const op = li.querySelector("[name=show_op]");
    if (op.dataset.want) { if ([...op.options].some((o) => o.value === op.dataset.want)) op.value = op.dataset.want; delete op.dataset.want; }
    return li;
  }
  form.addEventListener("change", refreshConditions);
  $("add-question").addEventListener("click", () => addQuestion().querySelector("[name=text]").focus());
  const NAMELESS = ["role:manager", "owner_manager"];  // targets without a pool or user name
  form.escalate_kind.addEventListener("change", () => { $("escalate-name-label").hidden = NAMELESS.includes(form.escalate_kind.value); });

  function value(raw, type, op) {
    raw = raw.trim();
    if (op === "answered") return true;
    if (type === "scale") return raw === "" ? null : Number(raw);
    if (type === "yes_no") return /^(y|yes|true)$/i.test(raw);
    if (op === "in") return raw.split(",").map((s) => s.trim()).filter(Boolean);
    return raw;
  }
  function condition(key, op, raw) {
    if (!key) return null;
    return { key, op, value: value(raw, typeOfKey(key), op) };
  }

  function build() {
    const questions = items().map((li) => {
      const type = li.querySelector("[name=type]").value;
      const q = { key: keyOf(li), text: li.querySelector("[name=text]").value.trim(), type, required: li.querySelector("[name=required]").checked };
      if (type === "scale") { q.min = Number(li.querySelector("[name=min]").value); q.max = Number(li.querySelector("[name=max]").value); }
      if (type === "choice" || type === "multi") q.options = li.querySelector("[name=options]").value.split("\n").map((s) => s.trim()).filter(Boolean);
      const show = condition(li.querySelector("[name=show_key]").value, li.querySelector("[name=show_op]").value, li.querySelector("[name=show_value]").value);
      if (show) q.show_if = show;
      return q;
    });
    const body = { name: form.name.value.trim(), script: form.script.value, questions, active: form.active.checked };
    const dis = condition(form.dis_key.value, form.dis_op.value, form.dis_value.value);
    if (dis) body.dissatisfied_if = dis;
    const kind = form.escalate_kind.value;
    body.escalate_to = NAMELESS.includes(kind) ? kind : kind + ":" + form.escalate_name.value.trim();
    return body;
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const out = $("builder-result"); out.textContent = ""; out.className = "muted";
    for (const li of items()) { li.classList.remove("bad"); li.querySelector(".q-error").hidden = true; }
    const res = await fetch(editing ? "/api/v1/surveys/" + editing : "/api/v1/surveys", {
      method: editing ? "PUT" : "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf }, body: JSON.stringify(build()),
    });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) {
      const err = data.error || {};
      const m = /^questions\[(\d+)\]/.exec(err.field || "");
      const li = m ? items()[Number(m[1])] : null;
      if (li) { li.classList.add("bad"); const e = li.querySelector(".q-error"); e.textContent = "Question " + (Number(m[1]) + 1) + ": " + err.message; e.hidden = false; li.scrollIntoView({ block: "center" }); }
      out.textContent = (err.field ? err.field + ": " : "") + (err.message || "not saved"); out.className = "error";
      return;
    }
    location.href = "/surveys?saved=" + data.id + "&v=" + data.version;
  });

  async function load(id) {
    const res = await fetch("/api/v1/surveys/" + id);
    if (!res.ok) return;
    const s = await res.json();
    editing = s.id;
    $("builder-title").textContent = "Edit “" + s.name + "” (v" + s.version + "; saving makes v" + (s.version + 1) + ")";
    form.name.value = s.name; form.script.value = s.script || ""; form.active.checked = s.active;
    list.textContent = "";
    for (const q of s.questions) addQuestion(q);
    if (s.dissatisfied_if && s.dissatisfied_if.key) {
      form.dis_key.dataset.want = s.dissatisfied_if.key; refreshConditions();
      form.dis_op.value = s.dissatisfied_if.op;
      form.dis_value.value = Array.isArray(s.dissatisfied_if.value) ? s.dissatisfied_if.value.join(", ") : String(s.dissatisfied_if.value);
    }
    const esc = s.escalate_to || "role:manager";
    if (NAMELESS.includes(esc)) form.escalate_kind.value = esc;
    else { const [k, n] = esc.split(":"); form.escalate_kind.value = k; form.escalate_name.value = n; }
    $("escalate-name-label").hidden = NAMELESS.includes(form.escalate_kind.value);
    refreshConditions();
  }
  for (const b of document.querySelectorAll(".edit-survey")) b.addEventListener("click", () => load(b.dataset.id));
  $("new-survey").addEventListener("click", () => { location.href = "/surveys"; });

  const saved = new URLSearchParams(location.search).get("saved");
  if (saved) { load(saved).then(() => { $("builder-result").textContent = "Saved."; }); }
  else addQuestion({ key: "overall", text: "Overall, how satisfied are you?", type: "scale", min: 1, max: 5, required: true });
})();
