// A survey on a call: the script, then the questions (show_if applied as the rep answers), submitted
// once; the server checks the answers again and names the question it refuses. Used by the preview
// card (call_lists.js) and the screen-pop (agent.js).
(function () {
  "use strict";
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  function el(tag, text, cls) { const e = document.createElement(tag); if (text != null) e.textContent = String(text); if (cls) e.className = cls; return e; }
  const answered = (v) => v !== undefined && v !== null && v !== "" && !(Array.isArray(v) && v.length === 0);

  // the same rules as followups/surveys.py Condition.holds
  function holds(c, answers) {
    if (!c) return true;
    if (c.any) return c.any.some((x) => holds(x, answers));
    if (c.all) return c.all.every((x) => holds(x, answers));
    const got = answers[c.key];
    if (c.op === "answered") return answered(got) === (c.value == null ? true : Boolean(c.value));
    if (!answered(got)) return c.op === "ne";
    switch (c.op) {
      case "eq": return JSON.stringify(got) === JSON.stringify(c.value);
      case "ne": return JSON.stringify(got) !== JSON.stringify(c.value);
      case "in": return c.value.includes(got);
      case "contains": { const items = Array.isArray(got) ? got : [got]; const want = Array.isArray(c.value) ? c.value : [c.value]; return want.some((v) => items.includes(v)); }
      case "lt": return got < c.value;
      case "lte": return got <= c.value;
      case "gt": return got > c.value;
      case "gte": return got >= c.value;
      default: return false;
    }
  }

  function questionInput(q, name) {
    const box = el("div", null, "q-input");
    const choice = (type, value, label) => {
      const l = el("label", null, "q-option"); const i = document.createElement("input");
      i.type = type; i.name = name; i.value = String(value); l.append(i, document.createTextNode(" " + label)); box.append(l);
    };
    if (q.type === "scale") { box.classList.add("q-scale"); for (let v = q.min; v <= q.max; v++) choice("radio", v, v); }
    else if (q.type === "yes_no") { choice("radio", "true", "Yes"); choice("radio", "false", "No"); }
    else if (q.type === "choice") for (const o of q.options) choice("radio", o, o);
    else if (q.type === "multi") for (const o of q.options) choice("checkbox", o, o);
    else { const t = document.createElement("textarea"); t.name = name; t.rows = 2; t.setAttribute("aria-label", q.text); box.append(t); }
    return box;
  }

  function readOne(q, fs) {
    if (q.type === "text") return fs.querySelector("textarea").value.trim();
    const checked = [...fs.querySelectorAll("input:checked")].map((i) => i.value);
    if (q.type === "multi") return checked;
    if (!checked.length) return undefined;
    if (q.type === "scale") return Number(checked[0]);
    if (q.type === "yes_no") return checked[0] === "true";
    return checked[0];
  }

  // render(container, survey, {contactId, target(): {attempt_id}|{call_id}|null, onSaved(response)})
  function render(container, survey, opts) {
    container.textContent = "";
    container.hidden = false;
    const form = el("form", null, "survey-form");
    form.dataset.surveyId = survey.id;
    form.append(el("h3", "Survey: " + survey.name));
    if (survey.script) form.append(el("p", survey.script, "survey-script"));
    const sets = new Map();
    survey.questions.forEach((q, i) => {
      const fs = el("fieldset", null, "q"); fs.dataset.key = q.key;
      const legend = el("legend", q.text); if (q.required) legend.append(el("span", " *", "req"));
      fs.append(legend, questionInput(q, "q" + survey.id + "-" + i), el("p", null, "q-error error"));
      fs.querySelector(".q-error").hidden = true;
      sets.set(q.key, fs); form.append(fs);
    });
    const actions = el("p", null, "survey-actions");
    const submit = el("button", "Save answers (completes the call)"); submit.type = "submit";
    const out = el("span", null, "survey-result muted"); out.setAttribute("aria-live", "polite");
    actions.append(submit, document.createTextNode(" "), out); form.append(actions);
    container.append(form);

    function answers() {
      const a = {};
      for (const q of survey.questions) {
        const fs = sets.get(q.key);
        if (fs.hidden) continue;
        const v = readOne(q, fs);
        if (answered(v)) a[q.key] = v;
      }
      return a;
    }
    function refresh() {
      const seen = {};
      for (const q of survey.questions) {
        const fs = sets.get(q.key);
        fs.hidden = !holds(q.show_if, seen);
        if (!fs.hidden) { const v = readOne(q, fs); if (answered(v)) seen[q.key] = v; }
      }
    }
    form.addEventListener("change", refresh);
    form.addEventListener("input", refresh);
    refresh();

    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      for (const fs of sets.values()) { const e = fs.querySelector(".q-error"); e.hidden = true; fs.classList.remove("bad"); }
      const target = opts.target();
      if (!target) { out.textContent = "Call the customer first: the answers are saved with the call."; return; }
      submit.disabled = true;
      const res = await fetch("/api/v1/surveys/" + survey.id + "/responses", {
        method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
        body: JSON.stringify(Object.assign({ contact_id: opts.contactId, answers: answers() }, target)),
      });
      const body = await res.json().catch(() => ({}));
      if (!res.ok) {
        submit.disabled = false;
        const err = body.error || {}; const key = (err.field || "").replace(/^answers\./, "");
        const fs = sets.get(key);
        if (fs) { const e = fs.querySelector(".q-error"); e.textContent = err.message; e.hidden = false; fs.classList.add("bad"); }
        out.textContent = (err.field ? err.field + ": " : "") + (err.message || "not saved");
        return;
      }
      for (const i of form.querySelectorAll("input, textarea")) i.disabled = true;
      submit.hidden = true;
      out.textContent = "Saved: completed survey." + (body.dissatisfied ? " A manager will call the customer back." : "");
      if (opts.onSaved) opts.onSaved(body);
    });
    return { answers };
  }

  window.SBSurvey = { render, holds };
})();
