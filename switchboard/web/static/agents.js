// The live agent board: a manager's table follows /ws/agent?board=1; anyone sets their own ready/paused.
(function () {
  "use strict";
  const table = document.getElementById("board");
  if (!table) return;
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const watch = table.dataset.watch === "yes";
  const me = table.dataset.me;
  const conn = document.getElementById("board-conn");
  let retry = 500;

  function label(state) { return state.replace("_", " "); }
  function ago(iso) {
    if (!iso) return "";
    const s = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000));
    return s < 60 ? s + " s" : s < 3600 ? Math.floor(s / 60) + " min" : Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }
  function cell(tr, cls) { return tr.querySelector("." + cls); }

  function row(a) {
    let tr = table.querySelector('tbody tr[data-user="' + CSS.escape(a.user) + '"]');
    if (!tr) {
      if (!watch && a.user !== me) return null;
      tr = document.createElement("tr");
      tr.dataset.user = a.user;
      for (const cls of ["name", "ext", "st", "for", "call", "queue", "num answered", "num outbound", "num talk"]) {
        const td = document.createElement("td"); td.className = cls; tr.append(td);
      }
      table.tBodies[0].append(tr);
    }
    return tr;
  }

  function show(a) {
    const tr = row(a);
    if (tr) {
      tr.cells[0].textContent = a.name || a.user;
      tr.cells[1].textContent = a.extension || "";
      const span = document.createElement("span");
      span.className = "state s-" + a.state; span.textContent = label(a.state);
      tr.cells[2].replaceChildren(span);
      tr.dataset.since = a.since || "";
      tr.dataset.state = a.state;
      cell(tr, "call").textContent = a.call_id || "";
      cell(tr, "queue").textContent = a.queue || "";
      cell(tr, "answered").textContent = a.today.answered;
      cell(tr, "outbound").textContent = a.today.outbound;
      cell(tr, "talk").textContent = a.today.talk_s + " s";
      cell(tr, "for").textContent = ago(a.since);
    }
    if (a.user === me) {
      const mine = document.getElementById("my-state-name");
      if (mine) { mine.className = "state s-" + a.state; mine.textContent = label(a.state); }
    }
  }

  function waiting(map) {
    const el = document.getElementById("waiting");
    if (!el) return;
    const parts = Object.entries(map).map(([q, n]) => (q || "(no queue)") + " " + n);
    el.textContent = parts.length ? parts.join(", ") : "none";
  }

  function tick() {
    for (const tr of table.querySelectorAll("tbody tr[data-since]")) {
      const c = cell(tr, "for"); if (c) c.textContent = ago(tr.dataset.since);
    }
  }
  setInterval(tick, 1000); tick();

  function connect() {
    const proto = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(proto + location.host + "/ws/agent?self=1" + (watch ? "&board=1" : ""));
    ws.onopen = () => { retry = 500; if (conn) conn.textContent = "live"; };
    ws.onmessage = (ev) => {
      const msg = JSON.parse(ev.data);
      if (msg.type === "board") { for (const a of msg.items) show(a); waiting(msg.waiting); }
      else if (msg.type === "agent") show(msg.agent);
      else if (msg.type === "queues") waiting(msg.waiting);
    };
    ws.onclose = () => {
      if (conn) conn.textContent = "reconnecting…";
      setTimeout(connect, retry); retry = Math.min(retry * 2, 10000);
    };
  }
  connect();

  const err = document.getElementById("state-error");
  for (const id of ["set-ready", "set-paused"]) {
    const b = document.getElementById(id);
    if (!b) continue;
    b.addEventListener("click", async () => {
      const resp = await fetch("/api/v1/agents/me/state", {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify({ state: b.dataset.state }),
      });
      const body = await resp.json();
      if (!resp.ok) { err.textContent = body.error.message; err.hidden = false; return; }
      err.hidden = true;
      show(body);
    });
  }
})();
