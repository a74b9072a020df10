"""Chromium for the Playwright tests (tests/e2e), and what they check on every page."""

from __future__ import annotations

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BROWSER_SKIP_REASON = f"BROWSER TESTS SKIPPED: no Chromium at {CHROMIUM} (install it with `apt-get install chromium`)"

# What a reader would see as broken, one sentence each, on the page as the browser laid it out:
# - the page wider than the window, or content cut off by a box that does not scroll;
# - a table cell whose content is wider than the cell;
# - on a laptop (wider than the 700 px where tables turn into cards), a column that is hidden, or that
#   does not fit in the visible part of its table (cut off, or reachable only by scrolling sideways);
# - on a phone (tables as cards), a card wider than the screen, or a cell without a data-label (its value
#   would show with no name);
# - text overflowing a button, or a button stretched far beyond its text by the grid or flex row it is in;
# - a select too narrow for the option it shows (while it could be wider);
# - a label (th, dt, label, legend, a card's data-label) that breaks a word in two, or may do so
#   (`overflow-wrap: anywhere` or `word-break: break-all`);
# - a fieldset with the browser's default grooved border.
# Elements that overflow on purpose are left alone: screen-reader-only text and ellipsised labels.
LAYOUT_PROBLEMS_JS = """
() => {
  const problems = [];
  const doc = document.documentElement;
  const CARDS_AT = 700;  // static/css/console.css: tables become stacked cards at this width and below
  const desktop = window.innerWidth > CARDS_AT;
  const hidden = (el) => Boolean(el.closest(".visually-hidden, template, [hidden]")) || el.getClientRects().length === 0;
  const name = (el) => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") +
    (el.className && typeof el.className === "string" && el.className.trim()
      ? "." + el.className.trim().split(/\\s+/).join(".") : "");
  const text = (el) => (el.textContent || "").trim().replace(/\\s+/g, " ").slice(0, 40);
  const px = (v) => parseFloat(v) || 0;
  const where = (el) => {
    const table = el.closest("table");
    return table ? `${name(el)} "${text(el)}" in ${name(table)}` : `${name(el)} "${text(el)}"`;
  };

  if (doc.scrollWidth > window.innerWidth + 1) {
    // Name the innermost elements that stick out, so the failure says what to fix.
    const scrolled = (el) => {
      for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
        if (getComputedStyle(p).overflowX !== "visible") return true;
      }
      return false;
    };
    const out = [...document.querySelectorAll("body *")].filter(
      (el) => el.getBoundingClientRect().right > window.innerWidth + 1 && !el.closest(".visually-hidden") && !scrolled(el)
    );
    const leaves = out.filter((el) => !out.some((other) => other !== el && el.contains(other))).slice(0, 3);
    const names = leaves.map((el) => el.outerHTML.slice(0, 80));
    problems.push(`page is ${doc.scrollWidth}px wide in a ${window.innerWidth}px window (${names.join(", ")})`);
  }

  // Content cut off: a box narrower than its content that does not scroll (tables and their cells
  // always count; other boxes only when they clip, since plain text spilling is caught by the page width).
  for (const el of document.querySelectorAll("body *")) {
    if (el.closest(".visually-hidden, template, [hidden]")) continue;
    if (["INPUT", "TEXTAREA", "SELECT"].includes(el.tagName)) continue;  // they scroll their own text
    const style = getComputedStyle(el);
    if (style.display === "inline" || style.display === "none" || style.textOverflow === "ellipsis") continue;
    if (el.clientWidth === 0 || el.scrollWidth <= el.clientWidth + 1) continue;
    if (style.overflowX === "auto" || style.overflowX === "scroll") continue;
    const tabular = ["TABLE", "TBODY", "THEAD", "TR", "TD", "TH"].includes(el.tagName);
    if (!tabular && !el.querySelector("table") && style.overflowX === "visible") continue;
    const what = ["TD", "TH"].includes(el.tagName) ? `the content of ${where(el)}` : name(el);
    problems.push(`${what} is ${el.scrollWidth - el.clientWidth}px wider than its box (overflow-x: ${style.overflowX})`);
  }

  for (const table of document.querySelectorAll("table")) {
    if (hidden(table)) continue;
    const cells = [...table.querySelectorAll(":scope > * > tr > td, :scope > * > tr > th, :scope > tr > td")];
    // The box the table scrolls in (.table-wrap) or is cut by: what lies beyond its right edge is out of view.
    let box = table.parentElement;
    while (box && box !== document.body && getComputedStyle(box).overflowX === "visible") box = box.parentElement;
    const boxRight = box && box !== document.body
      ? box.getBoundingClientRect().left + box.clientLeft + box.clientWidth : window.innerWidth;
    const beyond = Math.round(table.getBoundingClientRect().right - boxRight);
    const boxName = box && box !== document.body ? name(box) : "the window";
    if (desktop) {
      // Columns hidden on a laptop: by CSS, or beyond the right edge of that box.
      for (const cell of cells) {
        const style = getComputedStyle(cell);
        if (!cell.closest("[hidden]") && (style.display === "none" || style.visibility === "hidden")) {
          problems.push(`${where(cell)} is hidden (display: ${style.display}, visibility: ${style.visibility})`);
          break;
        }
      }
      const head = table.tHead ? [...table.tHead.rows].pop() : table.rows[0];
      const out = head ? [...head.cells].filter((c) => c.getBoundingClientRect().right > boxRight + 1) : [];
      if (out.length) {
        problems.push(`${name(table)} is ${beyond}px wider than ${boxName}: ` +
          `column${out.length > 1 ? "s" : ""} ${out.map((c) => `"${text(c)}"`).join(", ")} cut off or out of view`);
      }
    } else if (table.classList.contains("data")) {
      // Cards mode: a card wider than the screen puts its values (on the right) out of view.
      if (beyond > 1) {
        problems.push(`${name(table)} is ${beyond}px wider than ${boxName}: its cards' values are cut off or out of view`);
      }
      // Every value cell names its column (actions, and a cell spanning the row, need not).
      // A row headed by its own th (an invoice's "Subtotal" row) is named by it.
      const unnamed = cells.filter((c) => c.tagName === "TD" && !c.dataset.label && c.colSpan === 1 &&
        !c.classList.contains("actions-cell") && text(c) && !hidden(c) &&
        ![...c.parentElement.cells].some((h) => h.tagName === "TH" && !hidden(h) && text(h)));
      if (unnamed.length) {
        problems.push(`${unnamed.length} cell${unnamed.length > 1 ? "s" : ""} of ${name(table)} without data-label ` +
          `show${unnamed.length > 1 ? "" : "s"} a value with no name (first: "${text(unnamed[0])}")`);
      }
    }
  }

  // Buttons: no text spilling out; not stretched to fill a grid cell or a row's height.
  for (const el of document.querySelectorAll("button, .btn, input[type=submit]")) {
    if (hidden(el) || el.matches("button.link, .menu-body *")) continue;
    if (el.scrollWidth > el.clientWidth + 1 || el.scrollHeight > el.clientHeight + 1) {
      problems.push(`the text of button ${where(el)} overflows it by ${el.scrollWidth - el.clientWidth}px`);
      continue;
    }
    if (el.tagName === "INPUT" || !text(el)) continue;
    const style = getComputedStyle(el);
    const range = document.createRange();
    range.selectNodeContents(el);
    const inner = range.getBoundingClientRect();
    const rect = el.getBoundingClientRect();
    const frameY = px(style.paddingTop) + px(style.paddingBottom) + px(style.borderTopWidth) + px(style.borderBottomWidth);
    const frameX = px(style.paddingLeft) + px(style.paddingRight) + px(style.borderLeftWidth) + px(style.borderRightWidth);
    const parent = el.parentElement ? getComputedStyle(el.parentElement).display : "";
    if (rect.height > inner.height + frameY + 8) {
      problems.push(`button ${where(el)} is ${Math.round(rect.height)}px tall for one line of text (stretched by its ${parent} parent)`);
    } else if (desktop && /grid|flex/.test(parent) && rect.width > inner.width + frameX + 120) {
      problems.push(`button ${where(el)} is ${Math.round(rect.width)}px wide for ${Math.round(inner.width)}px of text (stretched by its ${parent} parent)`);
    }
  }

  // Selects draw their option's text clipped, without a scroll bar: measure the shown option. A name
  // longer than a select that is already 20rem wide, or as wide as its card, is cut like any long name
  // in a select (the open list shows it whole); a select that could be wider but is not is a problem.
  const ruler = document.createElement("canvas").getContext("2d");
  const rem = px(getComputedStyle(doc).fontSize);
  for (const select of document.querySelectorAll("select")) {
    if (hidden(select) || select.multiple || select.size > 1 || select.selectedIndex < 0) continue;
    const style = getComputedStyle(select);
    const width = select.getBoundingClientRect().width;
    const box = select.closest(".card, form, main") || document.body;
    const boxStyle = getComputedStyle(box);
    const boxWidth = box.clientWidth - px(boxStyle.paddingLeft) - px(boxStyle.paddingRight);
    if (width >= 20 * rem - 1 || width >= boxWidth - 2) continue;
    ruler.font = `${style.fontStyle} ${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
    const shown = select.options[select.selectedIndex].text.trim();
    const ARROW = 20;  // the drop-down arrow Chromium draws inside the padding box
    const room = select.clientWidth - px(style.paddingLeft) - px(style.paddingRight) - ARROW;
    const needed = ruler.measureText(shown).width;
    if (needed > room + 1) {
      problems.push(`select ${name(select)} cuts "${shown.slice(0, 40)}" (${Math.round(needed)}px of text in ${Math.round(room)}px)`);
    }
  }

  // Labels keep their words whole: a word laid out on two lines, or a rule that allows it.
  const WORD = /[\\p{L}\\p{N}]{2,}/gu;
  const labels = document.querySelectorAll("th, dt, label, legend, .label, .nav-label");
  for (const el of labels) {
    if (hidden(el)) continue;
    const style = getComputedStyle(el);
    if (style.overflowWrap === "anywhere" || style.wordBreak === "break-all") {
      problems.push(`label ${where(el)} may break mid-word (overflow-wrap: ${style.overflowWrap}, word-break: ${style.wordBreak})`);
      continue;
    }
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    let broken = "";
    for (let node = walker.nextNode(); node && !broken; node = walker.nextNode()) {
      for (const match of node.data.matchAll(WORD)) {
        const range = document.createRange();
        range.setStart(node, match.index);
        range.setEnd(node, match.index + match[0].length);
        const tops = new Set([...range.getClientRects()].map((r) => Math.round(r.top)));
        if (tops.size > 1) { broken = match[0]; break; }
      }
    }
    if (broken) problems.push(`label ${where(el)} breaks the word "${broken}" across lines`);
  }
  // A card's column names are drawn by td::before from data-label (console.css, cards mode).
  if (!desktop) {
    const seen = new Set();
    for (const td of document.querySelectorAll("table.data td[data-label]")) {
      if (hidden(td)) continue;
      const before = getComputedStyle(td, "::before");
      if (before.content === "none" || before.content === '""' || before.display === "none") continue;
      if (before.overflowWrap === "anywhere" || before.wordBreak === "break-all") {
        const table = td.closest("table");
        if (seen.has(table)) continue;
        seen.add(table);
        problems.push(`the data-label of ${where(td)} may break mid-word (overflow-wrap: ${before.overflowWrap}, word-break: ${before.wordBreak})`);
      }
    }
  }

  for (const fieldset of document.querySelectorAll("fieldset")) {
    if (hidden(fieldset)) continue;
    if (getComputedStyle(fieldset).borderTopStyle === "groove") {
      problems.push(`${name(fieldset)} has the browser's default grooved border`);
    }
  }
  return problems;
}
"""
