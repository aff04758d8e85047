// Conveyor dashboard: live updates over SSE and a few conveniences. Our own code, no library.
// Pages work without it; with it, they follow the server's event stream: each event
// (coalesced) makes the page re-read its numbers or regions, rendered by the server.
"use strict";

(function () {
  const EVENT_TYPES = ["created", "started", "progress", "retrying", "completed", "failed",
    "cancelled", "queued", "skipped", "waiting", "workflow"];
  const DEBOUNCE_MS = 300;

  // At most one call of `fn` per `ms`, and never two at once: a burst of events (or a
  // steady stream of them, which a plain debounce would postpone forever) becomes one
  // re-read soon after the first event, and one more after the last.
  function coalesce(fn, ms) {
    let waiting = false;
    let running = false;
    let again = false;
    async function run() {
      waiting = false;
      running = true;
      try { await fn(); } catch (e) { console.warn("refresh failed", e); }
      running = false;
      if (again) { again = false; schedule(); }
    }
    function schedule() {
      if (running) { again = true; return; }
      if (waiting) return;
      waiting = true;
      setTimeout(run, ms);
    }
    return schedule;
  }

  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  async function getJSON(url) {
    const response = await fetch(url, {
      headers: { "Accept": "application/json", "X-CSRF-Token": csrfToken() },
      credentials: "same-origin",
    });
    if (response.status === 401) { window.location.reload(); return null; }
    if (!response.ok) throw new Error("HTTP " + response.status);
    return response.json();
  }

  function setLiveState(state, text) {
    document.body.dataset.liveState = state;
    document.querySelectorAll("[data-live-status]").forEach((el) => { el.textContent = text; });
  }

  // One EventSource per page; `onEvent(type, data)` for each message.
  function follow(url, onEvent) {
    const source = new EventSource(url);
    source.onopen = () => setLiveState("open", "Live");
    source.onerror = () => {
      // CLOSED: the server refused the stream (signed out, say); otherwise it reconnects.
      if (source.readyState === EventSource.CLOSED) setLiveState("error", "Not live: reload the page");
      else setLiveState("error", "Reconnecting…");
    };
    EVENT_TYPES.forEach((type) => source.addEventListener(type, (message) => {
      let data = null;
      try { data = JSON.parse(message.data); } catch (e) { data = null; }
      onEvent(type, data);
    }));
    window.addEventListener("pagehide", () => source.close());
    return source;
  }

  function swap(root, regions) {
    Object.entries(regions).forEach(([name, html]) => {
      const el = root.querySelector('[data-region="' + name + '"]');
      if (el) el.innerHTML = html;
    });
  }

  // ---- overview ---------------------------------------------------------------------------
  function overview(root) {
    const refresh = coalesce(async () => {
      const data = await getJSON(root.dataset.summary);
      if (!data) return;
      Object.entries(data.totals).forEach(([state, n]) => {
        const el = root.querySelector('[data-total="' + state + '"]');
        if (el) el.textContent = String(n);
      });
      const set = (sel, v) => { const el = root.querySelector(sel); if (el) el.textContent = String(v); };
      set("[data-finished]", data.finished);
      set("[data-failed]", data.failed);
      set("[data-workers]", data.workers_alive);
      swap(root, data.html);
    }, DEBOUNCE_MS);
    follow(root.dataset.events, refresh);
    setInterval(refresh, 15000); // heartbeats and the charts' clock move without events too
  }

  // ---- jobs table -------------------------------------------------------------------------
  function jobsTable(table) {
    const body = table.querySelector("[data-rows-body]");
    const refresh = coalesce(async () => {
      const data = await getJSON(table.dataset.rows);
      if (!data) return;
      const checked = new Set(Array.from(body.querySelectorAll("input[name=ids]:checked"))
        .map((box) => box.value));
      const before = new Map(Array.from(body.querySelectorAll("tr[data-job]"))
        .map((tr) => [tr.dataset.job, tr.className]));
      body.innerHTML = data.rows;
      body.querySelectorAll("tr[data-job]").forEach((tr) => {
        const box = tr.querySelector("input[name=ids]");
        if (box && checked.has(box.value)) box.checked = true;
        if (before.get(tr.dataset.job) !== tr.className) tr.classList.add("flash-in");
      });
      document.querySelectorAll("[data-range]").forEach((el) => { el.innerHTML = data.range; });
      document.querySelectorAll("[data-total-jobs]").forEach((el) => { el.textContent = data.total; });
      countSelected();
    }, DEBOUNCE_MS);
    follow(table.dataset.events, refresh);
  }

  function countSelected() {
    const n = document.querySelectorAll("input[name=ids]:checked").length;
    document.querySelectorAll("[data-selected]").forEach((el) => { el.textContent = String(n); });
  }

  function selection() {
    const all = document.querySelector("[data-select-all]");
    if (all) {
      all.addEventListener("change", () => {
        document.querySelectorAll("input[name=ids]").forEach((box) => { box.checked = all.checked; });
        countSelected();
      });
    }
    document.addEventListener("change", (e) => {
      if (e.target instanceof HTMLInputElement && e.target.name === "ids") countSelected();
    });
  }

  // ---- one job ----------------------------------------------------------------------------
  function jobPage(root) {
    const timeline = root.querySelector("[data-timeline]");
    const refresh = coalesce(async () => {
      const data = await getJSON(root.dataset.parts);
      if (data) swap(root, data.html);
    }, DEBOUNCE_MS);
    follow(root.dataset.events, (type, data) => {
      addToTimeline(timeline, type, data);
      if (type === "progress" && data && data.data) {
        const bar = root.querySelector("[data-progress]");
        const text = root.querySelector("[data-progress-text]");
        if (bar) bar.value = data.data.percent;
        if (text) {
          text.textContent = data.data.percent + " %" +
            (data.data.message ? " · " + data.data.message : "");
        }
      } else {
        refresh();
      }
    });
  }

  // ---- one workflow: any event of its steps or its own re-reads the graph and the table -----
  function workflowPage(root) {
    const refresh = coalesce(async () => {
      const data = await getJSON(root.dataset.parts);
      if (data) swap(root, data.html);
    }, DEBOUNCE_MS);
    follow(root.dataset.events, (type) => { if (type !== "progress") refresh(); });
  }

  function addToTimeline(list, type, data) {
    if (!list) return;
    const empty = list.querySelector("[data-empty]");
    if (empty) empty.remove();
    const item = document.createElement("li");
    item.className = "ev-" + type;
    const when = document.createElement("span");
    when.className = "when";
    when.textContent = data && data.at ? new Date(data.at).toISOString().replace("T", " ").slice(0, 19) : "";
    const name = document.createElement("strong");
    name.textContent = type;
    item.append(when, " ", name);
    if (data && data.job && data.job.attempt) {
      const attempt = document.createElement("span");
      attempt.className = "muted";
      attempt.textContent = " attempt " + data.job.attempt;
      item.append(attempt);
    }
    const extra = document.createElement("span");
    extra.className = "muted";
    const details = data && data.data;
    if (type === "progress" && details) {
      extra.textContent = " " + details.percent + " %" + (details.message ? " · " + details.message : "");
    } else if (details && details.error) {
      extra.textContent = " " + details.error.message;
    }
    if (extra.textContent) item.append(extra);
    list.append(item);
  }

  // ---- conveniences -----------------------------------------------------------------------
  function confirmations() {
    document.addEventListener("submit", (e) => {
      const form = e.target;
      if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
        e.preventDefault();
      }
    });
    document.querySelectorAll("[data-select-on-focus]").forEach((input) => {
      input.addEventListener("focus", () => input.select());
    });
  }

  // On a phone the filters start folded, unless some are set.
  function foldFilters() {
    const box = document.querySelector("details.filter-box");
    if (box && !("filtered" in box.dataset) && window.matchMedia("(max-width: 600px)").matches) {
      box.open = false;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    foldFilters();
    confirmations();
    selection();
    const root = document.querySelector("[data-live]");
    if (!root || typeof EventSource === "undefined") return;
    if (root.dataset.live === "overview") overview(root);
    else if (root.dataset.live === "jobs") jobsTable(root);
    else if (root.dataset.live === "job") jobPage(root);
    else if (root.dataset.live === "workflow") workflowPage(root);
  });
})();
