// The live call log page: one WebSocket (/ws/logs/), calls prepended as they arrive, pause/resume,
// and filters by key, model, status and end user applied in the page. Every value is inserted as
// text (never as HTML): end users, models and errors come from API clients.

(() => {
  const form = document.getElementById("live-filters");
  if (!form) return;
  const rows = document.getElementById("live-rows");
  const statusBadge = document.getElementById("live-status");
  const pauseButton = document.getElementById("live-pause");
  const clearButton = document.getElementById("live-clear");
  const countLine = document.getElementById("live-count");
  const detailUrl = form.dataset.detailUrl;
  const KEEP = 1000; // calls kept in memory for re-filtering
  const SHOW = 300; // rows in the table

  let calls = []; // newest first
  let held = []; // arrived while paused, newest first
  let paused = false;
  let socket = null;
  let retry = 1000;

  const filters = () => ({
    key: form.elements.key.value,
    model: form.elements.model.value,
    status: form.elements.status.value,
    user: form.elements.user.value.trim().toLowerCase(),
  });

  function matches(call, f) {
    if (f.key && call.key !== f.key) return false;
    if (f.model && call.model !== f.model && call.route !== f.model) return false;
    const failed = call.status >= 400 || Boolean(call.error);
    if (f.status === "ok" && failed) return false;
    if (f.status === "error" && !failed) return false;
    if (f.status === "4xx" && !(call.status >= 400 && call.status < 500)) return false;
    if (f.status === "5xx" && !(call.status >= 500)) return false;
    if (f.user && !(call.end_user || "").toLowerCase().includes(f.user)) return false;
    return true;
  }

  function cell(row, text, className) {
    const td = document.createElement("td");
    if (className) td.className = className;
    td.textContent = text == null || text === "" ? "—" : String(text);
    row.appendChild(td);
    return td;
  }

  const ms = (v) => (v == null ? "" : `${Math.round(v)} ms`);

  // A guardrail outcome (observability.live.event) as the words before the check's name and a badge colour.
  const GUARDRAIL_BADGES = {
    block: ["blocked by", "danger"],
    flag: ["flagged by", "warn"],
    log: ["logged by", ""],
    error: ["error in", "warn"],
  };

  // On a phone each row is a card, and a cell shows its column's name from data-label (console.css).
  const columnNames = [...document.querySelectorAll("#live-table thead th")].map((th) => th.textContent.trim());

  function renderRow(call) {
    const tr = document.createElement("tr");
    tr.className = "live-row";
    tr.dataset.requestId = call.request_id;
    const when = call.at_ms == null ? "" : new Date(call.at_ms).toISOString().replace("T", " ").slice(0, 23);
    cell(tr, when, "small");
    const idCell = document.createElement("td");
    const link = document.createElement("a");
    link.href = detailUrl.replace("REQUEST_ID", encodeURIComponent(call.request_id));
    link.textContent = call.request_id;
    link.className = "mono small";
    idCell.appendChild(link);
    tr.appendChild(idCell);
    cell(tr, call.key);
    cell(tr, call.route && call.route !== call.model ? `${call.model} → ${call.route}` : call.model);
    cell(tr, call.deployment);
    const status = cell(tr, call.status, "num");
    const failed = call.status >= 400 || Boolean(call.error);
    const badge = document.createElement("span");
    badge.className = `badge ${failed ? "badge-danger" : "badge-ok"}`;
    badge.textContent = status.textContent;
    status.textContent = "";
    status.appendChild(badge);
    cell(tr, ms(call.latency_ms), "num");
    cell(tr, ms(call.ttfb_ms), "num");
    cell(tr, call.total_tokens, "num");
    cell(tr, call.cost_usd == null ? "" : `${call.cost_usd}${call.cost_estimated ? " (est.)" : ""}`, "num");
    cell(tr, call.end_user);
    const flags = [];
    if (call.stream) flags.push("stream");
    if (call.cache) flags.push(`cache ${call.cache}`);
    if (call.pii) flags.push("PII");
    if (call.fallback) flags.push("fallback");
    if (call.variant) flags.push(`A/B ${call.variant}`);
    if (call.disconnected) flags.push("client left");
    const flagCell = cell(tr, flags.join(", "), "small");
    const verdicts = Object.entries(call.guardrails || {});
    if (verdicts.length) {
      // One badge per guardrail check that did not pass ("blocked by pi"); the event has no passes.
      if (!flags.length) flagCell.textContent = "";
      const list = document.createElement("span");
      list.className = "badge-list";
      for (const [name, outcome] of verdicts) {
        const [words, kind] = GUARDRAIL_BADGES[outcome] || ["guardrail", ""];
        const badge = document.createElement("span");
        badge.className = `badge badge-wrap guardrail-badge${kind ? ` badge-${kind}` : ""}`;
        badge.textContent = `${words} ${name}`;
        list.appendChild(badge);
      }
      if (flags.length) flagCell.append(" ");
      flagCell.appendChild(list);
    }
    const error = cell(tr, call.error, "small");
    if (call.error_message) error.title = call.error_message;
    [...tr.cells].forEach((td, i) => {
      td.dataset.label = columnNames[i] || "";
    });
    return tr;
  }

  function updateCount() {
    const shown = rows.children.length;
    let text = calls.length ? `${shown} of ${calls.length} recent calls shown.` : "No calls yet.";
    if (held.length) text += ` ${held.length} new while paused.`;
    countLine.textContent = text;
  }

  function renderAll() {
    const f = filters();
    const fragment = document.createDocumentFragment();
    let n = 0;
    for (const call of calls) {
      if (n >= SHOW) break;
      if (matches(call, f)) {
        fragment.appendChild(renderRow(call));
        n += 1;
      }
    }
    rows.replaceChildren(fragment);
    updateCount();
  }

  function add(newCalls) {
    // A message holds one flushed batch, oldest first: the newest goes on top.
    const newestFirst = newCalls.slice().reverse();
    calls = newestFirst.concat(calls).slice(0, KEEP);
    const f = filters();
    const fragment = document.createDocumentFragment();
    for (const call of newestFirst) if (matches(call, f)) fragment.appendChild(renderRow(call));
    rows.insertBefore(fragment, rows.firstChild);
    while (rows.children.length > SHOW) rows.lastChild.remove();
    updateCount();
  }

  // The latest calls already stored (oldest first), drawn before the socket connects.
  const initial = document.getElementById("live-initial");
  if (initial) {
    try {
      const stored = JSON.parse(initial.textContent);
      if (Array.isArray(stored) && stored.length) add(stored);
    } catch (_err) {
      // a page without them starts empty
    }
  }

  function setStatus(text, kind) {
    statusBadge.textContent = text;
    statusBadge.className = `badge${kind ? ` badge-${kind}` : ""}`;
  }

  const PING_MS = 20000;

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}${form.dataset.socket}`);
    socket.addEventListener("message", (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "hello") {
        retry = 1000;
        setStatus(paused ? "Paused" : "Live", paused ? "warn" : "ok");
        pauseButton.disabled = false;
        clearButton.disabled = false;
      } else if (message.type === "calls") {
        if (paused) {
          held = message.calls.slice().reverse().concat(held).slice(0, KEEP);
          updateCount();
        } else {
          add(message.calls);
        }
      }
    });
    // Keep-alive: a quiet tenant sends nothing for minutes, and proxies close idle sockets. The
    // server answers each ping with a pong (observability.consumers).
    const keepAlive = setInterval(() => {
      if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "ping" }));
    }, PING_MS);
    socket.addEventListener("close", (event) => {
      clearInterval(keepAlive);
      if (event.code === 4401 || event.code === 4403 || event.code === 1006 && retry > 30000) {
        setStatus("Disconnected: sign in again to watch this tenant", "danger");
        return;
      }
      setStatus("Reconnecting…", "warn");
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 60000);
    });
  }

  pauseButton.addEventListener("click", () => {
    paused = !paused;
    pauseButton.setAttribute("aria-pressed", String(paused));
    pauseButton.textContent = paused ? "Resume" : "Pause";
    setStatus(paused ? "Paused" : "Live", paused ? "warn" : "ok");
    if (!paused && held.length) {
      const backlog = held.slice().reverse();
      held = [];
      add(backlog);
    }
  });
  clearButton.addEventListener("click", () => {
    calls = [];
    held = [];
    renderAll();
  });
  form.addEventListener("input", renderAll);
  form.addEventListener("submit", (event) => event.preventDefault());
  connect();
})();
