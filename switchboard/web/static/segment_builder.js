// The segment builder on /call-lists: conditions as rows (field, condition, value), all/any, the live
// count from POST /api/v1/segments/preview; the JSON filter stays under "Advanced" for what rows cannot say.
// A saved segment opens back into rows (rowsOf is condition's inverse) and saves again in place.
(function () {
  "use strict";
  const form = document.getElementById("segment-form");
  if (!form) return;
  const builder = document.getElementById("segment-builder");
  const list = builder.querySelector("ol.conditions");
  const tpl = document.getElementById("condition-template");
  const count = builder.querySelector(".segment-count");
  const result = document.getElementById("segment-result");
  const advanced = document.getElementById("segment-advanced");

  const TEXT = [["eq", "is"], ["ne", "is not"], ["contains", "contains"], ["is_set", "has a value"], ["not_set", "is empty"]];
  const NUMBER = [["gte", "is at least"], ["lte", "is at most"], ["gt", "is more than"], ["lt", "is less than"]];
  const DATE = [["older_than_days", "is older than (days)"], ["within_days", "is within the last (days)"],
    ["anniversary_within_days", "anniversary within (days)"]];
  const FLAG = [["yes", "is yes"], ["no", "is no"]];
  const TOUCH = [["any_within_days", "within the last (days)"], ["none_within_days", "none within the last (days)"],
    ["count_gte", "at least (how many)"], ["count_lte", "at most (how many)"]];
  // field key -> [label, operators]
  const FIELDS = [
    ["first_name", "First name", TEXT], ["last_name", "Last name", TEXT], ["email", "Email", TEXT],
    ["owner", "Salesperson (username)", TEXT], ["external_id", "Customer # (DMS id)", TEXT],
    ["time_zone", "Time zone", TEXT], ["created_at", "Added to the CRM", DATE],
    ["tag", "Tag", [["has", "is"], ["not", "is not"]]],
    ["attr", "Attribute…", TEXT.concat(NUMBER, DATE)],
    ["do_not_call", "Do not call", FLAG], ["sms_opt_out", "Opted out of SMS", FLAG], ["email_opt_out", "Opted out of email", FLAG],
    ["call", "A call", TOUCH], ["inbound_call", "An inbound call", TOUCH], ["sms", "A text", TOUCH], ["email_touch", "An email", TOUCH],
  ];
  const TOUCHES = { call: { kind: "call" }, inbound_call: { kind: "call", direction: "inbound" }, sms: { kind: "sms" }, email_touch: { kind: "email" } };
  const byKey = Object.fromEntries(FIELDS.map((f) => [f[0], f]));
  const NUMERIC_OPS = new Set(["gte", "lte", "gt", "lt"].concat(DATE.map((o) => o[0]), TOUCH.map((o) => o[0])));
  const NO_VALUE = new Set(["is_set", "not_set", "yes", "no"]);

  function setOps(row) {
    const f = byKey[row.field.value];
    const keep = row.op.value;
    row.op.textContent = "";
    for (const [v, label] of f[2]) { const o = document.createElement("option"); o.value = v; o.textContent = label; row.op.append(o); }
    if ([...row.op.options].some((o) => o.value === keep)) row.op.value = keep;
    row.attr.hidden = row.field.value !== "attr";
    setValue(row);
  }
  function setValue(row) {
    const op = row.op.value;
    row.value.hidden = NO_VALUE.has(op);
    row.value.type = NUMERIC_OPS.has(op) ? "number" : "text";
    row.value.placeholder = NUMERIC_OPS.has(op) ? (TOUCH.some((o) => o[0] === op) || DATE.some((o) => o[0] === op) ? "days" : "number") : "value";
    if (TOUCH.some((o) => o[0] === op) && op.startsWith("count")) row.value.placeholder = "how many";
  }

  function addRow(field, op, value, attr) {
    const li = tpl.content.firstElementChild.cloneNode(true);
    const row = { li, field: li.querySelector("[name=field]"), op: li.querySelector("[name=op]"), value: li.querySelector("[name=value]"), attr: li.querySelector("[name=attr]") };
    for (const [v, label] of FIELDS) { const o = document.createElement("option"); o.value = v; o.textContent = label; row.field.append(o); }
    row.field.value = field || "tag";
    setOps(row);
    if (op) { row.op.value = op; setValue(row); }
    if (value != null) row.value.value = value;
    if (attr) row.attr.value = attr;
    row.field.addEventListener("change", () => { setOps(row); changed(); });
    row.op.addEventListener("change", () => { setValue(row); changed(); });
    row.value.addEventListener("input", changed);
    row.attr.addEventListener("input", changed);
    li.querySelector(".remove").addEventListener("click", () => { li.remove(); changed(); });
    li._row = row;
    list.append(li);
    return row;
  }

  // one row as a filter condition, or an error naming what is missing
  function condition(row) {
    const f = row.field.value, op = row.op.value, raw = row.value.value.trim();
    const label = byKey[f][1];
    if (!NO_VALUE.has(op) && raw === "") throw new Error(label + ": give a value");
    const num = Number(raw);
    if (NUMERIC_OPS.has(op) && !Number.isFinite(num)) throw new Error(label + ": " + raw + " is not a number");
    if (f === "tag") return op === "has" ? { tag: raw } : { not: { tag: raw } };
    if (TOUCHES[f]) return { touches: TOUCHES[f], op, value: Math.trunc(num) };
    if (op === "yes" || op === "no") return { field: f, op: "eq", value: op === "yes" };
    let field = f;
    if (f === "attr") {
      const key = row.attr.value.trim();
      if (!key) throw new Error("Attribute: give its name, e.g. last_service_date");
      field = "attributes." + key;
    }
    if (NO_VALUE.has(op)) return { field, op };
    let value = NUMERIC_OPS.has(op) ? num : raw;
    if ((op === "eq" || op === "ne") && f === "attr" && /^-?\d+(\.\d+)?$/.test(raw)) value = num;
    return { field, op, value };
  }

  // a stored filter as builder rows {match, rows: [[field, op, value, attr]]}, or null when rows cannot say it
  const same = (a, b) => JSON.stringify(Object.entries(a).sort()) === JSON.stringify(Object.entries(b).sort());
  const keys = (o) => Object.keys(o).sort().join(",");
  const hasOp = (f, op) => byKey[f] && byKey[f][2].some((o) => o[0] === op);
  function rowOf(c) {
    if (!c || typeof c !== "object" || Array.isArray(c)) return null;
    if (keys(c) === "tag" && typeof c.tag === "string") return ["tag", "has", c.tag];
    if (keys(c) === "not" && c.not && keys(c.not) === "tag" && typeof c.not.tag === "string") return ["tag", "not", c.not.tag];
    const text = (v) => (typeof v === "string" || typeof v === "number" ? String(v) : null);
    if (keys(c) === "op,touches,value" && c.touches && typeof c.touches === "object") {
      const f = Object.keys(TOUCHES).find((k) => same(TOUCHES[k], c.touches));
      return f && hasOp(f, c.op) && text(c.value) !== null ? [f, c.op, text(c.value)] : null;
    }
    if (typeof c.field !== "string" || !(keys(c) === "field,op" || keys(c) === "field,op,value")) return null;
    if (FLAG_FIELDS.has(c.field)) return c.op === "eq" && typeof c.value === "boolean" ? [c.field, c.value ? "yes" : "no"] : null;
    let f = c.field, attr = null;
    if (f.startsWith("attributes.")) { attr = f.slice(11); f = "attr"; }
    if (!hasOp(f, c.op)) return null;
    if (NO_VALUE.has(c.op)) return "value" in c ? null : [f, c.op, null, attr];
    return text(c.value) === null ? null : [f, c.op, text(c.value), attr];
  }
  function rowsOf(filter) {
    let match = "all", conds = [filter];
    if (filter && typeof filter === "object" && (keys(filter) === "all" || keys(filter) === "any")) {
      match = keys(filter); conds = filter[match];
      if (!Array.isArray(conds) || !conds.length) return null;
    }
    const rows = conds.map(rowOf);
    return rows.every(Boolean) ? { match, rows } : null;
  }
  const FLAG_FIELDS = new Set(FIELDS.filter((f) => f[2] === FLAG).map((f) => f[0]));

  function filterFromRows() {
    const rows = [...list.children].map((li) => li._row);
    if (!rows.length) throw new Error("add a condition");
    const conds = rows.map(condition);
    return conds.length === 1 ? conds[0] : { [form.match.value]: conds };
  }

  let handEdited = false;
  function currentFilter() {
    if (handEdited) return JSON.parse(form.filter.value);
    return filterFromRows();
  }

  let timer = null;
  function changed() {
    handEdited = false;
    try { form.filter.value = JSON.stringify(filterFromRows(), null, 2); } catch (e) { /* shown by the count */ }
    clearTimeout(timer); timer = setTimeout(updateCount, 250);
  }
  form.filter.addEventListener("input", () => { handEdited = true; clearTimeout(timer); timer = setTimeout(updateCount, 400); });

  async function updateCount() {
    let f;
    try { f = currentFilter(); } catch (e) { count.textContent = ""; count.append(span(e.message, "error")); return; }
    const r = await SB.api("POST", "/api/v1/segments/preview", { filter: f });
    count.textContent = "";
    if (!r.ok) { count.append(span(SB.errText(r.body), "error")); return; }
    const n = r.body.count;
    if (handEdited) count.append(span("From the JSON under Advanced: ", "muted"));
    count.append(span(n + " customer" + (n === 1 ? "" : "s") + " today", "count"));
    if (r.body.sample.length) count.append(span(" — e.g. " + r.body.sample.slice(0, 3).map((c) => c.name).join(", "), "muted"));
  }
  function span(text, cls) { const s = document.createElement("span"); s.textContent = text; s.className = cls; return s; }

  builder.querySelector(".add-condition").addEventListener("click", () => { const row = addRow(); changed(); row.field.focus(); });
  form.match.addEventListener("change", changed);
  document.getElementById("segment-preview").addEventListener("click", updateCount);

  // saved segments: choosing one fills the rows (or the JSON, when rows cannot say it) to edit and save again
  const saved = form.saved;
  const saveNew = document.getElementById("segment-save-new");
  let segments = [];
  async function loadSaved(selectId) {
    const r = await SB.api("GET", "/api/v1/segments");
    if (!r.ok) return;
    segments = r.body.items;
    saved.length = 1;
    for (const s of segments) { const o = document.createElement("option"); o.value = s.id; o.textContent = s.name; saved.append(o); }
    if (selectId != null) saved.value = String(selectId);
    saveNew.hidden = !saved.value;
  }
  function open(seg) {
    form.name.value = seg.name;
    list.textContent = "";
    const parsed = rowsOf(seg.filter);
    if (parsed) {
      form.match.value = parsed.match;
      for (const [f, op, value, attr] of parsed.rows) addRow(f, op, value, attr);
      changed();
      result.textContent = "Editing “" + seg.name + "”: change the conditions, then Save segment.";
    } else {
      handEdited = true;
      form.filter.value = JSON.stringify(seg.filter, null, 2);
      advanced.open = true;
      clearTimeout(timer); timer = setTimeout(updateCount, 0);
      result.textContent = "“" + seg.name + "” uses conditions the rows cannot show: edit it as JSON under Advanced.";
    }
  }
  saved.addEventListener("change", () => {
    saveNew.hidden = !saved.value;
    const seg = segments.find((s) => String(s.id) === saved.value);
    if (seg) open(seg);
    else { form.name.value = ""; result.textContent = ""; }
  });

  async function save(asNew) {
    let f;
    try { f = currentFilter(); } catch (e) { result.textContent = "filter: " + e.message; return; }
    const editing = !asNew && saved.value;
    const r = editing
      ? await SB.api("PUT", "/api/v1/segments/" + saved.value, { name: form.name.value, filter: f })
      : await SB.api("POST", "/api/v1/segments", { name: form.name.value, filter: f });
    if (!r.ok) { result.textContent = SB.errText(r.body); return; }
    result.textContent = "Saved “" + r.body.name + "”: " + r.body.count + " customers today.";
    document.dispatchEvent(new CustomEvent("segment-saved", { detail: Object.assign({ updated: !!editing }, r.body) }));
    await loadSaved(r.body.id);
  }
  form.addEventListener("submit", (ev) => { ev.preventDefault(); save(false); });
  saveNew.addEventListener("click", () => save(true));
  loadSaved(null);

  // a starting point a dealership recognises: service customers not seen for six months
  addRow("attr", "older_than_days", "180", "last_service_date");
  addRow("attr", "gte", "3", "service_visits");
  changed();
  advanced.addEventListener("toggle", () => { if (advanced.open && !handEdited) changed(); });
})();
