// The case page's side-by-side masks: every reader's, the consensus and the prediction on the
// same slice. Its own slider moves them; when the adjudicator's viewer is on the page, they
// follow its slice too.
"use strict";
(function () {
  const gallery = document.getElementById("gallery");
  if (!gallery) return;
  const slider = document.getElementById("gallery-slice");
  const sliceUrl = gallery.dataset.sliceUrl;
  const at = (template, z) => template.replace("{z}", String(z));
  function show(z) {
    slider.value = String(z);
    for (const item of gallery.querySelectorAll(".gallery-item")) {
      item.querySelector(".gallery-slice").src = at(sliceUrl, z);
      const overlay = item.querySelector(".gallery-overlay");
      overlay.src = at(overlay.dataset.overlayUrl, z);
    }
    gallery.dataset.z = String(z);
  }
  slider.addEventListener("input", () => show(Number(slider.value)));
  const viewer = document.getElementById("viewer");
  if (viewer) {
    new MutationObserver(() => {
      const z = Number(viewer.dataset.z);
      if (Number.isFinite(z) && String(z) !== gallery.dataset.z) show(z);
    }).observe(viewer, { attributes: true, attributeFilter: ["data-z"] });
  }
  show(Number(slider.value));
})();
