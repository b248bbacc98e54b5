// Recordings: search with filters (words said are marked in each result), play in the page (the audio
// element seeks with Range requests) beside the transcript, whose times jump the player; export.
(function () {
  "use strict";
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const form = document.getElementById("rec-filters");
  const tbody = document.querySelector("#rec-results tbody");
  const more = document.getElementById("rec-more");
  const player = document.getElementById("rec-player");
  const errorBox = document.getElementById("rec-error");
  const panel = document.getElementById("rec-transcript");
  const segList = document.getElementById("rec-segments");
  const nowPlaying = document.getElementById("rec-now");
  const progress = document.getElementById("rec-transcripts");
  let cursor = null;
  const STATES = { indexed: "ready", pending: "waiting for the file", unlinked: "no call found for it", empty: "silent (nobody was connected)", truncated: "cut short", deleted: "deleted by the retention rule" };
  const empty = document.getElementById("rec-empty");
  const canEdit = !!document.getElementById("rec-export");
  const el = (tag, text, cls) => { const e = document.createElement(tag); if (text != null) e.textContent = String(text); if (cls) e.className = cls; return e; };

  function params() {
    const p = new URLSearchParams();
    for (const f of ["extension", "agent", "direction", "number", "since", "until", "min_duration", "q"]) {
      if (form[f].value) p.set(f, form[f].value);
    }
    return p;
  }

  // text runs [{text, hit}] from the API, the hits inside <mark>
  function marked(parts) {
    const span = el("span", null, "snippet");
    for (const p of parts) span.append(p.hit ? el("mark", p.text) : document.createTextNode(p.text));
    return span;
  }

  const clock = (s) => Math.floor(s / 60) + ":" + String(Math.floor(s % 60)).padStart(2, "0");

  function seek(seconds) {
    const go = () => { player.currentTime = seconds; player.play().catch(() => {}); };
    if (player.readyState >= 1) go(); else player.addEventListener("loadedmetadata", go, { once: true });
  }

  async function showTranscript(r) {
    segList.textContent = "";
    panel.hidden = true;
    const res = await fetch("/api/v1/recordings/" + r.id);
    if (!res.ok) return;
    const rec = await res.json();
    const words = (form.q.value.match(/[\p{L}\p{N}_]+/gu) || []).map((w) => w.toLowerCase());
    for (const seg of rec.transcript_segments || []) {
      const li = el("li"); li.dataset.start = seg.start; li.dataset.end = seg.end;
      const at = el("button", clock(seg.words.length ? seg.words[0][1] : seg.start), "secondary at"); at.type = "button";
      at.dataset.start = seg.words.length ? seg.words[0][1] : seg.start;
      at.addEventListener("click", () => seek(Number(at.dataset.start)));
      const text = el("span");
      seg.words.forEach(([w, start], i) => {
        if (i) text.append(" ");
        const hit = words.some((q) => w.toLowerCase().startsWith(q));
        const word = el(hit ? "mark" : "span", w, "word"); word.dataset.start = start; word.title = clock(start);
        word.addEventListener("click", () => seek(start));
        text.append(word);
      });
      li.append(at, text);
      segList.append(li);
    }
    panel.hidden = !segList.children.length;
  }

  player.addEventListener("timeupdate", () => {
    for (const li of segList.children) {
      li.classList.toggle("playing", player.currentTime >= Number(li.dataset.start) && player.currentTime < Number(li.dataset.end));
    }
  });

  async function loadProgress() {
    if (!progress) return;
    const res = await fetch("/api/v1/recordings/transcripts");
    if (!res.ok) return;
    const body = await res.json();
    const c = body.counts;
    if (!body.enabled && !c.done) { progress.textContent = ""; return; }
    progress.textContent = "Transcripts: " + c.done + " done, " + (c.queued + c.working) + " waiting" + (c.failed ? ", " + c.failed + " failed" : "") + ".";
  }

  async function load(append) {
    const p = params();
    if (append && cursor) p.set("cursor", cursor);
    const res = await fetch("/api/v1/recordings?" + p.toString());
    const body = await res.json();
    errorBox.hidden = res.ok;
    if (!res.ok) { errorBox.textContent = (body.error.field ? body.error.field + ": " : "") + body.error.message; return; }
    if (!append) tbody.textContent = "";
    empty.hidden = append || body.items.length > 0;
    for (const r of body.items) {
      const tr = el("tr"); tr.dataset.id = r.id;
      const box = el("input"); box.type = "checkbox"; box.value = r.id; box.setAttribute("aria-label", "Select recording " + r.id);
      const td0 = el("td"); td0.append(box); tr.append(td0);
      tr.append(el("td", r.started_at ? window.SB.when(r.started_at) : ""), el("td", r.direction || ""));
      const who = el("td");
      if (r.contact_id) { const a = el("a", r.contact_name || "#" + r.contact_id); a.href = "/contacts/" + r.contact_id; who.append(a); }
      if (r.transcript_match) who.append(marked(r.transcript_match));
      const theirs = r.direction === "outbound" ? r.to : r.from;
      const num = el("td", window.SB.phone(theirs));
      const call = /^\+\d{6,}$/.test(theirs || "") ? window.SB.callButton(theirs, r.contact_id, r.contact_name) : null;
      if (call) num.append(" ", call);
      tr.append(who, num, el("td", r.extension || ""), el("td", r.agent || ""),
        el("td", r.duration_s != null ? Math.round(r.duration_s) + " s" : ""), el("td", STATES[r.state] || r.state, "state"));
      const play = el("td");
      if (r.audio_url) {
        const b = el("button", "Play", "secondary play"); b.type = "button";
        b.setAttribute("aria-label", "Play recording of " + (r.contact_name || "the call") + ", " + window.SB.when(r.started_at));
        b.onclick = () => {
          player.src = r.audio_url; player.play().catch(() => {});
          nowPlaying.textContent = "Playing: " + (r.contact_name || window.SB.phone(r.direction === "outbound" ? r.to : r.from) || "recording " + r.id) + " · " + window.SB.when(r.started_at) + (r.agent ? " · " + r.agent : "");
          document.getElementById("rec-dock").hidden = false;
          if (r.has_transcript) showTranscript(r); else { segList.textContent = ""; panel.hidden = true; }
          for (const row of tbody.querySelectorAll("tr.playing")) row.classList.remove("playing");
          tr.classList.add("playing");
        };
        const dl = el("a", "Download", "download"); dl.href = r.audio_url; dl.download = "recording-" + r.id + "." + (r.format || "wav");
        play.append(b, " ", dl);
      }
      tr.append(play);
      if (canEdit) {
        const notes = el("td");
        const input = el("input"); input.value = r.notes || ""; input.placeholder = "notes"; input.className = "rec-notes"; input.setAttribute("aria-label", "Notes");
        const tags = el("input"); tags.value = (r.tags || []).join(", "); tags.placeholder = "tags"; tags.className = "rec-tags"; tags.setAttribute("aria-label", "Tags");
        const save = el("button", "Save", "secondary"); save.type = "button";
        save.onclick = async () => {
          const res = await fetch("/api/v1/recordings/" + r.id, { method: "PATCH", headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
            body: JSON.stringify({ notes: input.value, tags: tags.value.split(",").map((t) => t.trim()).filter(Boolean) }) });
          save.textContent = res.ok ? "Saved" : "Not saved";
        };
        notes.append(input, tags, save);
        tr.append(notes);
      }
      tbody.append(tr);
    }
    cursor = body.next_cursor;
    more.hidden = !cursor;
  }

  form.addEventListener("submit", (ev) => { ev.preventDefault(); load(false); });
  more.addEventListener("click", () => load(true));
  const exp = document.getElementById("rec-export");
  if (exp) exp.addEventListener("click", async () => {
    const ids = [...tbody.querySelectorAll("input[type=checkbox]:checked")].map((b) => Number(b.value));
    if (!ids.length) return;
    const res = await fetch("/api/v1/recordings/export", { method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf }, body: JSON.stringify({ ids }) });
    if (!res.ok) return;
    const url = URL.createObjectURL(await res.blob());
    const a = el("a"); a.href = url; a.download = "recordings.zip"; document.body.append(a); a.click(); a.remove();
  });
  load(false);
  loadProgress();
})();
