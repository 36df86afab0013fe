// The gallery's one script (the Content-Security-Policy allows no inline script): the "Copy prompt" buttons.
// It copies with the Clipboard API where the page may (a secure context: https, or localhost), else with
// a hidden text area; the button then says whether it worked (data-state "copied" or "failed").
"use strict";

function copyByTextArea(text) {
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.className = "offscreen";
  document.body.appendChild(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand("copy");
  } catch (e) {
    ok = false;
  }
  area.remove();
  return ok;
}

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch (e) {
      // not allowed here (no permission, page not focused): try the older way
    }
  }
  return copyByTextArea(text);
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) {
    return;
  }
  const ok = await copyText(button.dataset.copy);
  button.dataset.state = ok ? "copied" : "failed";
  button.textContent = ok ? "Copied ✓" : "Copy failed";
});
