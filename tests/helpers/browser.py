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

# Elements that overflow on purpose: screen-reader-only text and ellipsised labels.
LAYOUT_PROBLEMS_JS = """
() => {
  const problems = [];
  const doc = document.documentElement;
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
  for (const el of document.querySelectorAll("body *")) {
    if (el.closest(".visually-hidden, template, [hidden]")) continue;
    if (["INPUT", "TEXTAREA", "SELECT"].includes(el.tagName)) continue;  // they scroll their own text
    const style = getComputedStyle(el);
    if (style.display === "inline" || style.display === "none" || style.textOverflow === "ellipsis") continue;
    if (el.clientWidth === 0 || el.scrollWidth <= el.clientWidth + 1) continue;
    if (style.overflowX === "auto" || style.overflowX === "scroll") continue;
    if (!["TABLE", "TBODY", "THEAD", "TR", "TD", "TH"].includes(el.tagName) && !el.querySelector("table")
        && style.overflowX === "visible") continue;  // plain text spilling is caught by the page width
    const name = el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") +
      (el.className && typeof el.className === "string" ? "." + el.className.trim().split(/\\s+/).join(".") : "");
    problems.push(`${name} clips ${el.scrollWidth - el.clientWidth}px (overflow-x: ${style.overflowX})`);
  }
  return problems;
}
"""
