// Copy buttons next to UIDs on detail pages: <button data-copy="1.2.3">copy</button>.
"use strict";
(function () {
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-copy]");
    if (!button) return;
    const text = button.dataset.copy;
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "copied";
    } catch (err) {
      // no clipboard (plain http, an old browser): select the UID so Ctrl+C copies it
      const code = button.previousElementSibling;
      if (code) window.getSelection().selectAllChildren(code);
      button.textContent = "selected: press Ctrl+C";
    }
    window.setTimeout(() => { button.textContent = "copy"; }, 2000);
  });
})();
