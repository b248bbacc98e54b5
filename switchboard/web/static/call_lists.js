// Call lists: the agent's preview/progressive dialing panel and the lists' live progress.
(function () {
  "use strict";
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const $ = (id) => document.getElementById(id);
  const post = (url, body) => fetch(url, {
    method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf }, body: JSON.stringify(body || {}),
  });
  function el(tag, text, cls) { const e = document.createElement(tag); if (text != null) e.textContent = String(text); if (cls) e.className = cls; return e; }
  const state = { entry: null, attempt: null };
  const preview = $("preview");

  function showError(msg) { const e = $("agent-error"); e.textContent = msg || ""; e.hidden = !msg; }
  async function failed(res) { const out = await res.json(); showError((out.error.field ? out.error.field + ": " : "") + out.error.message); }

  function showPop(pop, entry, listName, local, attempts) {
    preview.hidden = false; $("nothing-due").hidden = true;
    const c = pop.contact;
    preview.querySelector(".pop-name").textContent = c ? c.name : "New prospect";
    preview.querySelector(".pop-list").textContent = listName || "";
    preview.querySelector(".pop-number").textContent = window.SB.phone(entry ? entry.number : (pop.call.to || ""));
    preview.querySelector(".pop-local").textContent = local ? "Their time: " + local + " (" + entry.time_zone + ")" : "";
    preview.querySelector(".pop-owner").textContent = c && c.owner_name ? "Salesperson: " + c.owner_name : "";
    const touches = preview.querySelector(".pop-touches"); touches.textContent = "";
    for (const t of pop.recent_touches) touches.append(el("li", window.SB.when(t.at) + " · " + t.kind + " " + t.direction + " · " + t.summary));
    const fus = preview.querySelector(".pop-followups"); fus.textContent = "";
    for (const f of pop.open_followups) fus.append(el("li", "Follow-up due " + window.SB.when(f.due_at) + ": " + f.note));
    const att = preview.querySelector(".pop-attempts"); att.textContent = "";
    for (const a of attempts || []) att.append(el("li", "Attempt " + window.SB.when(a.started_at) + ": " + a.state + (a.disposition ? " · " + a.disposition : "")));
    // a list with a survey: the script and the questions; saving them is the call's disposition
    const box = preview.querySelector(".pop-survey");
    if (pop.survey && c && window.SBSurvey) {
      if (box.dataset.for !== String(c.id) + ":" + pop.survey.id) {
        box.dataset.for = String(c.id) + ":" + pop.survey.id;
        window.SBSurvey.render(box, pop.survey, {
          contactId: c.id,
          target: () => (state.attempt ? { attempt_id: state.attempt } : null),
          onSaved: () => {
            $("disposition").hidden = true; $("agent-state").textContent = "idle";
            if (state.previewing) { $("offer-next").hidden = false; $("take-next").focus(); }
            refresh();
          },
        });
      }
    } else { box.hidden = true; box.textContent = ""; delete box.dataset.for; }
  }

  function showDisposition(attemptId, label) {
    state.attempt = attemptId;
    const form = $("disposition"); form.hidden = false; form.reset();
    $("disposition-saved").textContent = "";
    $("call-state").textContent = label || "dialing…";
    preview.querySelector(".pop-actions").hidden = true;
  }

  async function takeNext() {
    showError("");
    $("offer-next").hidden = true;
    const res = await post("/api/v1/agent/next-call", {});
    if (!res.ok) return failed(res);
    const out = await res.json();
    if (!out.entry) { preview.hidden = true; $("nothing-due").hidden = false; return; }
    state.entry = out.entry; state.attempt = null; state.previewing = true;
    showPop(out.pop, out.entry, out.list.name, out.local_time, out.attempts);
    preview.querySelector(".pop-actions").hidden = false;
    $("disposition").hidden = true;
    $("agent-state").textContent = "previewing";
  }
  $("next-call").addEventListener("click", takeNext);
  $("take-next").addEventListener("click", takeNext);

  $("dial").addEventListener("click", async () => {
    showError("");
    const res = await post("/api/v1/agent/entries/" + state.entry.id + "/dial", {});
    if (!res.ok) return failed(res);
    const attempt = await res.json();
    showDisposition(attempt.id, "dialing…");
    $("agent-state").textContent = "on a call";
  });

  async function skip(later) {
    const reason = $("skip-reason").value.trim() || (later ? "later" : "");
    const res = await post("/api/v1/agent/entries/" + state.entry.id + "/skip", { reason, later });
    if (!res.ok) return failed(res);
    preview.hidden = true; state.entry = null; $("agent-state").textContent = "idle";
  }
  $("skip").addEventListener("click", () => skip(false));
  $("later").addEventListener("click", () => skip(true));

  $("disposition").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = ev.target;
    const body = { disposition: form.disposition.value, note: form.note.value };
    if (form.callback_at.value) body.callback_at = window.SB.localInputToIso(form.callback_at.value);
    const res = await post("/api/v1/call-attempts/" + state.attempt + "/disposition", body);
    if (!res.ok) return failed(res);
    $("disposition-saved").textContent = "Saved.";
    $("agent-state").textContent = "idle";
    // a preview list: the next customer is one key press away (progressive lists ring on their own)
    if (state.previewing) { $("offer-next").hidden = false; $("take-next").focus(); }
    refresh();
  });

  $("ready").addEventListener("click", async () => {
    showError("");
    const id = Number($("ready-list").value);
    if (!id) { showError("choose a progressive list"); return; }
    const res = await post("/api/v1/agent/ready", { list_id: id, ready: true });
    if (!res.ok) return failed(res);
    $("agent-state").textContent = "ready"; $("ready").hidden = true; $("not-ready").hidden = false;
  });
  $("not-ready").addEventListener("click", async () => {
    await post("/api/v1/agent/ready", { ready: false });
    $("agent-state").textContent = "paused"; $("ready").hidden = false; $("not-ready").hidden = true;
  });

  // progressive calls arrive as pops on the agent's socket; call ends as dialer messages
  function connect() {
    const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/agent");
    ws.onmessage = (m) => {
      const msg = JSON.parse(m.data);
      if (msg.type === "screen_pop" && msg.call && msg.call.attempt_id) {
        // the pop of the preview call just dialled keeps the preview; any other is the progressive dialer's
        if (!state.entry || state.entry.id !== msg.call.entry_id) { state.previewing = false; $("offer-next").hidden = true; }
        state.entry = Object.assign({}, state.entry, { id: msg.call.entry_id });
        showPop(msg, null, "", "", []);
        showDisposition(msg.call.attempt_id, "dialing…");
        $("agent-state").textContent = "on a call";
      } else if (msg.type === "dialer") {
        if (msg.state === "ended" && msg.attempt_id === state.attempt) $("call-state").textContent = "ended: " + msg.outcome;
        if (msg.state === "not_ready") { showError(msg.reason); $("agent-state").textContent = "paused"; $("ready").hidden = false; $("not-ready").hidden = true; }
        if (msg.state === "failed") showError(msg.reason);
      }
    };
    ws.onclose = () => setTimeout(connect, 2000);
  }
  connect();

  // managers: segments for the form, list creation
  const form = $("list-form");
  if (form) {
    fetch("/api/v1/segments").then((r) => (r.ok ? r.json() : { items: [] })).then((d) => {
      for (const s of d.items) { const o = el("option", s.name); o.value = s.id; form.segment.append(o); }
    });
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const err = $("list-error"); err.hidden = true;
      const body = { name: form.name.value, mode: form.mode.value, max_attempts: Number(form.max_attempts.value),
        retry_minutes: Number(form.retry_minutes.value), start: form.start.checked };
      if (form.segment.value) body.segment = Number(form.segment.value);
      else if (form.contact_ids.value.trim()) body.contact_ids = form.contact_ids.value.split(",").map((s) => Number(s.trim())).filter(Boolean);
      else body.tag = form.tag.value.trim();
      const agents = form.agents.value.split(",").map((s) => s.trim()).filter(Boolean);
      if (agents.length) body.agents = agents;
      const res = await post("/api/v1/call-lists", body);
      const out = await res.json();
      if (!res.ok) { err.textContent = (out.error.field ? out.error.field + ": " : "") + out.error.message; err.hidden = false; return; }
      $("build-summary").textContent = "Added " + out.build.added + " entries" +
        Object.entries(out.build).filter(([k]) => k !== "added").map(([k, v]) => "; skipped " + v + " (" + k + ")").join("");
      refresh();
    });
  }

  // saving a segment is segment_builder.js's; a saved one joins this form's choices
  document.addEventListener("segment-saved", (ev) => {
    if (!form) return;
    const known = [...form.segment.options].find((o) => o.value === String(ev.detail.id));
    if (known) { known.textContent = ev.detail.name; return; }
    const o = el("option", ev.detail.name); o.value = ev.detail.id; form.segment.append(o);
  });

  async function control(id, action, name) {
    if (action === "stop" && !window.confirm("Stop “" + name + "”? Nobody will be called from it again; this cannot be undone.")) return;
    await post("/api/v1/call-lists/" + id + "/" + action, {}); refresh(); }

  function detail(l) {
    const box = $("list-detail"); box.textContent = "";
    box.append(el("h3", l.name));
    // one table: each outcome of the calls, then each disposition the agents chose
    const rt = el("table", null, "list results"); const rh = el("tr");
    for (const h of ["Result", "Calls"]) rh.append(el("th", h));
    rt.append(rh);
    const rows = Object.entries(l.results).map(([k, v]) => [k.replace(/_/g, " "), v])
      .concat(Object.entries(l.dispositions).map(([k, v]) => ["disposition: " + k, v]));
    for (const [k, v] of rows) { const tr = el("tr"); tr.append(el("td", k), el("td", v)); rt.append(tr); }
    if (!rows.length) { const tr = el("tr"); tr.append(el("td", "no calls yet"), el("td", "")); rt.append(tr); }
    box.append(rt);
    const t = el("table", null, "list"); const head = el("tr");
    for (const h of ["Agent", "Attempts", "Reached", "Connect rate"]) head.append(el("th", h));
    t.append(head);
    for (const a of l.agents) { const tr = el("tr"); tr.append(el("td", a.username || "—"), el("td", a.attempts), el("td", a.reached), el("td", a.connect_rate == null ? "—" : Math.round(a.connect_rate * 100) + "%")); t.append(tr); }
    box.append(t);
  }

  // a manager attaches a survey to the chosen list, or takes it off (its next calls ask it, or none)
  const surveyForm = $("list-survey");
  if (surveyForm) {
    fetch("/api/v1/surveys").then((r) => (r.ok ? r.json() : { items: [] })).then((d) => {
      for (const s of d.items) { const o = el("option", s.name); o.value = s.id; surveyForm.survey_id.append(o); }
    });
    surveyForm.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const out = surveyForm.querySelector(".list-survey-result");
      const v = surveyForm.survey_id.value;
      const res = await fetch("/api/v1/call-lists/" + surveyForm.dataset.listId + "/survey", {
        method: "PUT", headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify({ survey_id: v ? Number(v) : null }),
      });
      const body = await res.json();
      out.textContent = !res.ok ? body.error.message : body.survey_name ? "Saved: its calls ask “" + body.survey_name + "”." : "Saved: no survey.";
      out.className = res.ok ? "muted list-survey-result" : "error list-survey-result";
    });
  }
  function surveyControl(l) {
    if (!surveyForm) return;
    surveyForm.dataset.listId = l.id; surveyForm.hidden = false;
    surveyForm.querySelector(".list-survey-name").textContent = l.name;
    surveyForm.survey_id.value = l.survey_id == null ? "" : String(l.survey_id);
    surveyForm.querySelector(".list-survey-result").textContent = "";
  }

  let selected = null;
  async function refresh() {
    const res = await fetch("/api/v1/call-lists");
    if (!res.ok) return;
    const data = await res.json();
    const tbody = document.querySelector("#lists tbody"); tbody.textContent = "";
    const sel = $("ready-list"); const keep = sel.value;
    while (sel.options.length > 1) sel.remove(1);
    for (const l of data.items) {
      const c = l.counts; const finished = c.done + c.skipped;
      const pct = l.total ? Math.round((100 * finished) / l.total) : 0;
      const tr = el("tr"); tr.dataset.listId = l.id;
      const name = el("td"); const a = el("a", l.name); a.href = "#"; a.addEventListener("click", (e) => { e.preventDefault(); selected = l.id; detail(l); surveyControl(l); }); name.append(a);
      tr.append(name, el("td", l.mode, "mode"), el("td", l.state, "state"));
      const bar = el("td"); const p = el("div", null, "progress"); const s = el("span"); s.style.width = pct + "%"; p.append(s);
      bar.append(p, el("span", c.pending + " pending · " + c.in_progress + " in progress · " + c.done + " done · " + c.skipped + " skipped", "muted progress-text"));
      tr.append(bar, el("td", l.attempts.total, "attempts"), el("td", l.connect_rate == null ? "—" : Math.round(l.connect_rate * 100) + "%", "connect"));
      const actions = el("td", null, "actions");
      if (form) {
        const acts = { draft: ["start", "stop"], running: ["pause", "stop"], paused: ["resume", "stop"] }[l.state] || [];
        for (const act of acts) { const b = el("button", act, "link"); b.type = "button"; b.setAttribute("aria-label", act + " " + l.name); b.addEventListener("click", () => control(l.id, act, l.name)); actions.append(b); }
      }
      tr.append(actions); tbody.append(tr);
      if (l.mode === "progressive" && l.state === "running") { const o = el("option", l.name); o.value = l.id; sel.append(o); }
      if (selected === l.id) detail(l);
    }
    sel.value = keep;
    $("no-lists").hidden = data.items.length > 0;
    $("lists").hidden = data.items.length === 0;
  }
  refresh();
  setInterval(refresh, 2000);
})();
