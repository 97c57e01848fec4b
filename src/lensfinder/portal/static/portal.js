// lensfinder inspection page: keyboard grading over the JSON API (see lensfinder.portal.app).
// A grade key saves the grade (POST /api/grades, committed before the answer) and shows the
// next candidate at once; the next LF.prefetch candidates' images are already loaded.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const VIEWS = ["rgb", "g", "r", "z"].concat(LF.hasContext ? ["context"] : []);
  const state = { inspector: null, cands: [], queue: [], pos: 0, total: 0, graded: 0, gen: 0, pending: 0 };
  const prefetched = new Map(); // url -> Image, kept so the decoded image stays in memory
  // timings[i] = ms from a grade/next key to the next candidate fully shown (benchmark, tests)
  window.lensfinder = { timings: [], state: state, ready: false };

  const imageUrl = (id, view) => `api/candidates/${id}/image.png?view=${view}`;
  const fmt = (v) => (typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(3)) : v == null ? "-" : String(v));

  function setStatus(text, isError) {
    $("status").textContent = text;
    $("status").className = isError ? "error" : "";
  }

  async function api(path, options) {
    const resp = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
    const body = (resp.headers.get("content-type") || "").includes("json") ? await resp.json() : null;
    if (!resp.ok) throw new Error((body && body.error) || `HTTP ${resp.status}`);
    return body;
  }

  async function start(name) {
    window.lensfinder.ready = false;
    delete document.body.dataset.shown;
    state.inspector = name;
    localStorage.setItem("lensfinder.inspector", name);
    const data = await api(`api/candidates?inspector=${encodeURIComponent(name)}`);
    state.cands = data.candidates;
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
    for (let k = 1; k <= LF.prefetch; k++) {
      const id = state.queue[state.pos + k];
      if (id === undefined) break;
      for (const v of VIEWS) {
        const url = imageUrl(id, v);
        if (prefetched.has(url)) continue;
        const img = new Image();
        img.src = url;
        img.decode().catch(() => {});
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
    state.pending += 1;
    document.body.dataset.pending = String(state.pending);
    api("api/grades", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ candidate: c.id, inspector: state.inspector, grade: g, comment: comment }) })
      .then((res) => {
        Object.assign(c, res.candidate);
        state.graded = res.progress.graded;
        updateProgress();
        setStatus(`saved ${c.name}: ${g}`, false);
      }, (err) => setStatus(`NOT SAVED: grade ${g} of ${c.name}: ${err.message}`, true))
      .finally(() => { state.pending -= 1; document.body.dataset.pending = String(state.pending); });
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
  $("who").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const name = $("inspector").value.trim();
    if (name) { $("inspector").blur(); start(name).catch((err) => setStatus(err.message, true)); }
  });
  const saved = localStorage.getItem("lensfinder.inspector");
  if (saved) { $("inspector").value = saved; start(saved).catch((err) => setStatus(err.message, true)); }
  else $("inspector").focus();
})();
