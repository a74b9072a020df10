// Log exports with a progress indicator. Without JavaScript the export links still download (the
// browser shows its own progress).

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
