// lensfinder inspection page: keyboard grading over the JSON API (see lensfinder.portal.app).
// A grade key puts the grade in an outbox kept in this browser (localStorage) and shows the
// next candidate at once; the outbox is sent in order, each grade by the object's key, and a
// grade leaves it only when the server has committed it. Failures are retried with back-off;
// a banner stays up while any grade is unsaved, and lists any the server refused. The next
// `prefetch` candidates' images are already loaded.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const cfg = document.body.dataset;
  const TOKEN = document.querySelector('meta[name="lensfinder-token"]').content;
  const PREFETCH = Number(cfg.prefetch || 4);
  const VIEWS = ["rgb", "g", "r", "z"].concat(cfg.hasContext === "true" ? ["context"] : []);
  const OUTBOX_KEY = `lensfinder.outbox.${cfg.port}.${cfg.batch}`;
  const REFUSED_KEY = `lensfinder.refused.${cfg.port}.${cfg.batch}`;
  const state = { inspector: null, cands: [], queue: [], pos: 0, total: 0, graded: 0, gen: 0, pending: 0,
    outbox: JSON.parse(localStorage.getItem(OUTBOX_KEY) || "[]"),
    refused: JSON.parse(localStorage.getItem(REFUSED_KEY) || "[]"), sending: false, retryMs: 0, starts: 0, prefetching: 0 };
  const byKey = new Map(); // "R/B/O" -> candidate
  const prefetched = new Map(); // url -> Image, kept so the decoded image stays in memory
  // timings[i] = ms from a grade/next key to the next candidate fully shown (benchmark, tests)
  window.lensfinder = { timings: [], state: state, ready: false };

  const imageUrl = (id, view) => `api/candidates/${id}/image.png?view=${view}`;
  const fmt = (v) => (typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(3)) : v == null ? "-" : String(v));
  const keyText = (key) => key.join("/");

  function setStatus(text, isError) {
    $("status").textContent = text;
    $("status").className = isError ? "error" : "";
  }

  class HttpError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(path, options) {
    const opts = Object.assign({ credentials: "same-origin" }, options || {});
    opts.headers = Object.assign({ "X-Token": TOKEN }, opts.headers || {});
    const resp = await fetch(path, opts);
    const body = (resp.headers.get("content-type") || "").includes("json") ? await resp.json() : null;
    if (!resp.ok) throw new HttpError(resp.status, (body && body.error) || `HTTP ${resp.status}`);
    return body;
  }

  // --- the outbox: every grade until the server has committed it --------------------------
  function saveOutbox() {
    localStorage.setItem(OUTBOX_KEY, JSON.stringify(state.outbox));
    localStorage.setItem(REFUSED_KEY, JSON.stringify(state.refused)); // kept until the grader sees to them
    state.pending = state.outbox.length;
    document.body.dataset.pending = String(state.pending);
    showBanner();
  }

  function showBanner(extra) {
    const lines = [];
    if (state.outbox.length) {
      lines.push(`${state.outbox.length} grade(s) NOT SAVED yet` + (extra ? `: ${extra}` : ": sending...") +
        " They are kept in this browser and sent as soon as the server answers; do not clear its data.");
    }
    for (const r of state.refused) lines.push(`REFUSED by the server, grade ${r.grade} of ${keyText(r.key)}: ${r.reason}`);
    $("outbox").hidden = lines.length === 0;
    $("outbox").replaceChildren(...lines.map((t) => { const p = document.createElement("p"); p.textContent = t; return p; }));
  }

  async function flush() {
    if (state.sending) return;
    state.sending = true;
    try {
      while (state.outbox.length) {
        const item = state.outbox[0];
        let res;
        try {
          res = await api("api/grades", { method: "POST", headers: { "Content-Type": "application/json" },
            body: JSON.stringify({ key: item.key, inspector: item.inspector, grade: item.grade, comment: item.comment }) });
        } catch (err) {
          const status = err instanceof HttpError ? err.status : 0;
          if (status === 401) { // a restarted server with a new token: only a new URL helps
            showBanner("the server does not accept this page's token (restarted?): open the URL it printed");
            scheduleRetry(10000);
            return;
          }
          if (status >= 400 && status < 500 && status !== 408 && status !== 429) { // this grade will never be accepted
            removeFromOutbox(item);
            state.refused.push({ key: item.key, grade: item.grade, reason: err.message });
            saveOutbox();
            continue;
          }
          state.retryMs = Math.min(state.retryMs ? 2 * state.retryMs : 500, 8000);
          showBanner(`${err.message}; retrying in ${(state.retryMs / 1000).toFixed(1)} s`);
          scheduleRetry(state.retryMs);
          return;
        }
        state.retryMs = 0;
        removeFromOutbox(item);
        saveOutbox();
        const c = byKey.get(keyText(item.key));
        const newer = state.outbox.some((o) => keyText(o.key) === keyText(item.key) && o.inspector === item.inspector);
        if (c && item.inspector === state.inspector && !newer) { // a newer grade still queued is what the page shows
          Object.assign(c, res.candidate);
          state.graded = res.progress.graded;
          updateProgress();
        }
        setStatus(`saved ${c ? c.name : keyText(item.key)}: ${item.grade}`, false);
      }
      prefetchNext(); // the server answers again: refill what failed while it was away
    } finally {
      state.sending = false;
    }
  }

  // by identity: while this item was being sent, a newer grade of the same object may have
  // replaced it in the queue, and other grades moved up
  function removeFromOutbox(item) {
    const i = state.outbox.indexOf(item);
    if (i >= 0) state.outbox.splice(i, 1);
  }

  function scheduleRetry(ms) {
    clearTimeout(state.retryTimer);
    state.retryTimer = setTimeout(flush, ms);
  }

  // --- the page -------------------------------------------------------------------------
  async function start(name) {
    window.lensfinder.ready = false;
    delete document.body.dataset.shown;
    const mine = ++state.starts; // the last name entered wins, whichever answer comes first
    const data = await api(`api/candidates?inspector=${encodeURIComponent(name)}`);
    if (mine !== state.starts) return;
    state.inspector = data.inspector;
    localStorage.setItem("lensfinder.inspector", data.inspector);
    state.cands = data.candidates;
    byKey.clear();
    for (const c of state.cands) byKey.set(keyText(c.key), c);
    for (const item of state.outbox) { // grades still in the outbox count as given
      const c = byKey.get(keyText(item.key));
      if (c && item.inspector === state.inspector) c.mine = { grade: item.grade, comment: item.comment };
    }
    state.queue = data.queue;
    state.total = data.candidates.length;
    state.graded = data.candidates.filter((c) => c.mine).length;
    // resume: the first candidate in this inspector's queue that they have not graded
    const next = state.queue.findIndex((id) => !state.cands[id].mine);
    state.pos = next < 0 ? state.queue.length - 1 : next;
    $("hello").hidden = true;
    $("main").hidden = false;
    show(performance.now());
    window.lensfinder.ready = true;
    flush();
  }

  function updateProgress() {
    $("bar").style.width = `${(100 * state.graded) / Math.max(state.total, 1)}%`;
    $("progress-text").textContent = `${state.inspector}: ${state.graded} / ${state.total} graded`;
  }

  function show(t0) {
    const gen = ++state.gen;
    const c = state.cands[state.queue[state.pos]];
    const imgs = VIEWS.map((v) => {
      const img = $(`img-${v}`);
      img.src = imageUrl(c.id, v);
      return img;
    });
    $("name").textContent = c.name;
    $("position").textContent = `${state.pos + 1} of ${state.queue.length} in your queue` + (c.settled && !c.mine ? " (already settled)" : "");
    const rows = Object.entries(c.scores).map(([k, v]) => [k, fmt(v)]).concat(Object.entries(c.info).map(([k, v]) => [k, fmt(v)]));
    rows.push(["RA, Dec [deg]", `${c.ra.toFixed(5)}, ${c.dec.toFixed(5)}`], ["key", c.key.join(" / ")]);
    $("facts").replaceChildren(...rows.map(([k, v]) => {
      const tr = document.createElement("tr");
      for (const text of [k, v]) { const td = document.createElement("td"); td.textContent = text; tr.appendChild(td); }
      return tr;
    }));
    $("viewer").href = c.viewer;
    $("consensus").textContent = c.n_graders
      ? `graders: ${c.n_graders}, mean ${c.mean.toFixed(2)}, difference ${c.difference}, consensus ${c.consensus}` + (c.settled ? " (settled)" : "")
      : "not graded yet";
    $("mine").textContent = `your grade: ${c.mine ? c.mine.grade : "-"}`;
    $("mine").dataset.grade = c.mine ? String(c.mine.grade) : "";
    $("comment").value = c.mine ? c.mine.comment : "";
    document.querySelectorAll("#grades button").forEach((b) => b.classList.toggle("chosen", !!c.mine && b.dataset.grade === String(c.mine.grade)));
    updateProgress();
    Promise.all(imgs.map((img) => img.decode())).then(() => {
      requestAnimationFrame(() => {
        if (gen !== state.gen) return;
        window.lensfinder.timings.push(performance.now() - t0);
        document.body.dataset.shown = String(c.id);
      });
    }, () => { if (gen === state.gen) setStatus(`an image of ${c.name} did not load`, true); });
    prefetchNext();
  }

  function prefetchNext() {
    for (let k = 1; k <= PREFETCH; k++) {
      const id = state.queue[state.pos + k];
      if (id === undefined) break;
      for (const v of VIEWS) {
        const url = imageUrl(id, v);
        if (prefetched.has(url)) continue;
        const img = new Image();
        img.src = url;
        state.prefetching += 1;
        img.decode().catch(() => prefetched.delete(url)) // a failed one is fetched again later
          .finally(() => { state.prefetching -= 1; });
        prefetched.set(url, img);
      }
    }
    if (prefetched.size > 400) { // keep memory bounded: drop the oldest
      for (const key of Array.from(prefetched.keys()).slice(0, prefetched.size - 400)) prefetched.delete(key);
    }
  }

  function move(step, t0) {
    const pos = Math.min(Math.max(state.pos + step, 0), state.queue.length - 1);
    if (pos === state.pos) { setStatus(step > 0 ? "end of the queue: all candidates shown" : "first candidate", false); return; }
    state.pos = pos;
    show(t0);
  }

  function grade(g, t0) {
    const c = state.cands[state.queue[state.pos]];
    const comment = $("comment").value;
    if (!c.mine) state.graded += 1;
    c.mine = { grade: g, comment: comment };
    // a newer grade of the same object replaces one not yet sent
    state.outbox = state.outbox.filter((o) => !(keyText(o.key) === keyText(c.key) && o.inspector === state.inspector));
    state.outbox.push({ key: c.key, inspector: state.inspector, grade: g, comment: comment });
    saveOutbox();
    flush();
    if (state.pos < state.queue.length - 1) move(1, t0); else { show(t0); setStatus("graded the last candidate in your queue", false); }
  }

  document.addEventListener("keydown", (ev) => {
    if (!state.inspector || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const t0 = performance.now();
    if (ev.target === $("comment")) {
      if (ev.key === "Escape") { $("comment").blur(); ev.preventDefault(); }
      if (ev.key === "Enter" && !ev.shiftKey) {
        ev.preventDefault();
        $("comment").blur();
        const c = state.cands[state.queue[state.pos]];
        if (c.mine) grade(c.mine.grade, t0); else setStatus("comment kept: it is sent with your grade", false);
      }
      return;
    }
    if (ev.target === $("inspector")) return;
    if (/^[0-4]$/.test(ev.key)) { ev.preventDefault(); grade(Number(ev.key), t0); }
    else if (ev.key === "n" || ev.key === "ArrowRight") { ev.preventDefault(); move(1, t0); }
    else if (ev.key === "p" || ev.key === "ArrowLeft") { ev.preventDefault(); move(-1, t0); }
    else if (ev.key === "c") { ev.preventDefault(); $("comment").focus(); }
  });
  document.querySelectorAll("#grades button").forEach((b) => b.addEventListener("click", () => grade(Number(b.dataset.grade), performance.now())));
  window.addEventListener("online", () => flush());
  $("who").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const name = $("inspector").value.trim();
    if (name) { $("inspector").blur(); start(name).catch((err) => setStatus(err.message, true)); }
  });
  saveOutbox(); // shows the banner for grades left unsaved by an earlier visit
  const saved = cfg.grader || localStorage.getItem("lensfinder.inspector");
  if (cfg.grader) $("inspector").readOnly = true;
  if (saved) { $("inspector").value = saved; start(saved).catch((err) => setStatus(err.message, true)); }
  else $("inspector").focus();
})();
