// Small progressive enhancements for the console. Every page works without this file.

// Copy buttons: <button data-copy="#element-id">. The text stays selectable for anyone without JS.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const source = document.querySelector(button.dataset.copy);
  if (!source) return;
  const text = (source.value ?? source.textContent).trim();
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // Older browsers or insecure origins: fall back to selecting the text and the legacy command.
    const range = document.createRange();
    range.selectNodeContents(source);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    document.execCommand("copy");
  }
  const label = button.dataset.label || button.textContent;
  button.dataset.label = label;
  button.textContent = "Copied ✓";
  button.setAttribute("aria-live", "polite");
  setTimeout(() => { button.textContent = label; }, 2000);
});

// Close an open menu when clicking elsewhere (menus are <details>, so they open without JS).
document.addEventListener("click", (event) => {
  document.querySelectorAll("details.menu[open]").forEach((menu) => {
    if (!menu.contains(event.target)) menu.removeAttribute("open");
  });
});

// After an htmx form saves, clear it so the next entry starts blank.
document.addEventListener("htmx:afterRequest", (event) => {
  const form = event.detail.elt;
  if (form.matches && form.matches("form[data-reset-on-success]") && event.detail.successful) {
    const failed = event.detail.xhr.getResponseHeader("HX-Retarget");
    if (!failed) form.reset();
  }
});

// A link to #some-create-card opens that folded form.
function openTargetedDetails() {
  const target = location.hash && document.getElementById(location.hash.slice(1));
  if (target && target.tagName === "DETAILS") target.open = true;
}
window.addEventListener("hashchange", openTargetedDetails);
document.addEventListener("DOMContentLoaded", openTargetedDetails);

// Plain (non-htmx) forms that need a second thought: <form data-confirm="Really?">.
document.addEventListener("submit", (event) => {
  const message = event.target.dataset && event.target.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});

// Formsets (a model's deployments, the routing rules): "Add a deployment" copies the blank row from its
// <template> and counts it in TOTAL_FORMS. Without JavaScript the page always offers one blank row per save.
function enableFormsets(root) {
  root.querySelectorAll("[data-formset]").forEach((set) => {
    const add = set.querySelector("[data-formset-add]");
    if (!add || add.dataset.ready) return;
    add.dataset.ready = "1";
    add.hidden = false;
    add.addEventListener("click", () => {
      const prefix = set.dataset.formset;
      const total = set.querySelector(`input[name="${prefix}-TOTAL_FORMS"]`);
      const template = set.querySelector("template[data-formset-empty]");
      const index = Number(total.value);
      const html = template.innerHTML.replaceAll("__prefix__", String(index));
      set.querySelector("[data-formset-rows]").insertAdjacentHTML("beforeend", html);
      total.value = String(index + 1);
      // The new row's place on screen is its order: show it, but leave the field empty so that only a
      // number the user types moves a row (routing.forms.kept_in_order).
      const order = set.querySelector(`input[name="${prefix}-${index}-ORDER"]`);
      if (order) order.placeholder = String(index + 1);
      const first = set.querySelector(`[name="${prefix}-${index}-provider"]`);
      if (first) first.focus();
    });
  });
}
document.addEventListener("DOMContentLoaded", () => enableFormsets(document));
document.addEventListener("htmx:load", (event) => enableFormsets(event.detail.elt));

// Provider forms show only the fields of the chosen kind: <select data-provider-kind> and inputs marked
// data-kinds="kind kind ...". Without JavaScript every field shows; the server ignores other kinds' fields.
function showProviderFields(select) {
  if (!select.form) return;
  select.form.querySelectorAll("[data-kinds]").forEach((input) => {
    const field = input.closest(".field") || input;
    field.hidden = !input.dataset.kinds.split(" ").includes(select.value);
  });
}
document.addEventListener("change", (event) => {
  if (event.target.matches("select[data-provider-kind]")) showProviderFields(event.target);
});
document.addEventListener("htmx:load", (event) => {
  event.detail.elt.querySelectorAll("select[data-provider-kind]").forEach(showProviderFields);
});
document.querySelectorAll("select[data-provider-kind]").forEach(showProviderFields);
