// Log exports with a progress indicator, and the playground. Without JavaScript the export links
// still download (the browser shows its own progress); the playground needs it.

function csrfToken() {
  try {
    return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["x-csrftoken"] || "";
  } catch {
    return "";
  }
}

// --- Exports: stream the file, count its lines, then hand it to the browser as a download. ---------
document.addEventListener("click", async (event) => {
  const link = event.target.closest("a[data-export]");
  if (!link || event.ctrlKey || event.metaKey || event.shiftKey) return;
  event.preventDefault();
  const box = document.getElementById("export-progress");
  const bar = box.querySelector("progress");
  const text = box.querySelector(".text");
  box.hidden = false;
  bar.removeAttribute("value");
  text.textContent = "Starting the export…";
  try {
    const response = await fetch(link.href, { credentials: "same-origin" });
    if (!response.ok) throw new Error(await response.text());
    const estimate = Number(response.headers.get("x-gateway-export-estimate") || 0);
    const isCsv = link.href.includes("format=csv");
    const reader = response.body.getReader();
    const parts = [];
    let lines = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      parts.push(value);
      for (let i = 0; i < value.length; i++) if (value[i] === 10) lines++;
      const rows = Math.max(lines - (isCsv ? 1 : 0), 0);
      if (estimate) {
        bar.max = estimate;
        bar.value = Math.min(rows, estimate);
        text.textContent = `${rows.toLocaleString()} of about ${estimate.toLocaleString()} rows`;
      } else {
        text.textContent = `${rows.toLocaleString()} rows`;
      }
    }
    const rows = Math.max(lines - (isCsv ? 1 : 0), 0);
    const disposition = response.headers.get("content-disposition") || "";
    const match = disposition.match(/filename="([^"]+)"/);
    const blob = new Blob(parts, { type: response.headers.get("content-type") || "text/plain" });
    const url = URL.createObjectURL(blob);
    const save = document.createElement("a");
    save.href = url;
    save.download = match ? match[1] : "logs";
    document.body.appendChild(save);
    save.click();
    save.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    bar.max = 1;
    bar.value = 1;
    text.textContent = `Done: ${rows.toLocaleString()} rows exported.`;
  } catch (error) {
    text.textContent = `The export failed: ${error.message}`;
  }
});

// --- Playground ------------------------------------------------------------------------------------
const SHOWN_HEADERS = /^(x-request-id|x-gateway-.*|content-type)$/;

async function mintKey(form) {
  const note = document.getElementById("pg-key-note");
  const response = await fetch(form.dataset.keyUrl, {
    method: "POST",
    credentials: "same-origin",
    headers: { "x-csrftoken": csrfToken() },
  });
  const data = await response.json();
  if (!response.ok) {
    note.textContent = data.error || "Could not create a key.";
    return;
  }
  document.getElementById("pg-key").value = data.key;
  note.textContent = `Using "${data.name}", valid until ${new Date(data.expires_at).toLocaleTimeString()}.`;
}

async function sendChat(form) {
  const answer = document.getElementById("pg-answer");
  const errorBox = document.getElementById("pg-error");
  const headersBox = document.getElementById("pg-headers");
  const logLink = document.getElementById("pg-log-link");
  answer.textContent = "";
  errorBox.hidden = true;
  headersBox.replaceChildren();
  logLink.hidden = true;
  const response = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: {
      authorization: `Bearer ${document.getElementById("pg-key").value.trim()}`,
      "content-type": "application/json",
    },
    body: JSON.stringify({
      model: document.getElementById("pg-model").value,
      messages: [{ role: "user", content: document.getElementById("pg-message").value }],
      stream: true,
      stream_options: { include_usage: true },
    }),
  });
  for (const [name, value] of response.headers) {
    if (!SHOWN_HEADERS.test(name)) continue;
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = value;
    headersBox.append(dt, dd);
  }
  const requestId = response.headers.get("x-request-id");
  if (requestId) {
    logLink.href = form.dataset.logUrl.replace("REQUEST_ID", encodeURIComponent(requestId));
    logLink.hidden = false;
  }
  if (!response.ok || !(response.headers.get("content-type") || "").includes("text/event-stream")) {
    const text = await response.text();
    let message = text;
    try {
      message = JSON.parse(text).error.message;
    } catch {}
    errorBox.textContent = `${response.status}: ${message}`;
    errorBox.hidden = false;
    return;
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let pending = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    pending += value;
    const events = pending.split("\n\n");
    pending = events.pop();
    for (const event of events) {
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") continue;
        try {
          const chunk = JSON.parse(data);
          if (chunk.error) {
            errorBox.textContent = chunk.error.message || "The stream failed.";
            errorBox.hidden = false;
          }
          const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
          if (delta && delta.content) answer.textContent += delta.content;
        } catch {}
      }
    }
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("playground-form");
  if (!form) return;
  const mint = document.getElementById("pg-mint");
  if (mint) mint.addEventListener("click", () => mintKey(form));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    sendChat(form).catch((error) => {
      const box = document.getElementById("pg-error");
      box.textContent = error.message;
      box.hidden = false;
    });
  });
});
