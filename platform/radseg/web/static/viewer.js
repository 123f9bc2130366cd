// The slice viewer: server-rendered PNGs for the slice (windowed) and the prediction overlay.
// Scroll with the slider, the mouse wheel over the image, or the arrow / Page keys.
"use strict";
(function () {
  const root = document.getElementById("viewer");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const count = Number(root.dataset.slices);
  const sliceUrl = root.dataset.sliceUrl;
  const overlayUrl = root.dataset.overlayUrl || "";
  const stage = $("stage");
  const sliceImg = $("slice-img");
  const overlayImg = $("overlay-img");
  const slider = $("slice");
  const label = $("slice-label");
  const wlInput = $("wl");
  const wwInput = $("ww");
  const presets = Array.from(document.querySelectorAll(".preset"));
  const state = { z: Number(slider.value), wl: Number(wlInput.value), ww: Number(wwInput.value) };

  // keep the physical aspect ratio (pixel spacing may differ along x and y)
  const w = Number(root.dataset.width) * Number(root.dataset.spacingX || 1);
  const h = Number(root.dataset.height) * Number(root.dataset.spacingY || 1);
  if (w > 0 && h > 0) stage.style.aspectRatio = `${w} / ${h}`;

  for (const swatch of document.querySelectorAll(".swatch[data-color]")) {
    swatch.style.background = swatch.dataset.color;
  }

  const classToggles = Array.from(document.querySelectorAll(".class-toggle"));
  const urlFor = (template, z, query) => template.replace("{z}", String(z)) + (query || "");
  const windowQuery = () => `?wl=${encodeURIComponent(state.wl)}&ww=${encodeURIComponent(state.ww)}`;
  const overlayQuery = () => {
    const hidden = classToggles.filter((c) => !c.checked).map((c) => c.dataset.classId);
    return hidden.length ? `?hide=${hidden.join(",")}` : "";
  };

  function prefetch(z) {
    if (z < 0 || z >= count) return;
    new Image().src = urlFor(sliceUrl, z, windowQuery());
    if (overlayUrl) new Image().src = urlFor(overlayUrl, z, overlayQuery());
  }

  function render() {
    sliceImg.src = urlFor(sliceUrl, state.z, windowQuery());
    if (overlayImg) overlayImg.src = urlFor(overlayUrl, state.z, overlayQuery());
    slider.value = String(state.z);
    label.textContent = `${state.z + 1} / ${count}`;
    root.dataset.z = String(state.z);
    wlInput.value = String(state.wl);
    wwInput.value = String(state.ww);
    for (const b of presets) {
      const on = Number(b.dataset.wl) === state.wl && Number(b.dataset.ww) === state.ww;
      b.setAttribute("aria-pressed", on ? "true" : "false");
    }
    prefetch(state.z + 1);
    prefetch(state.z - 1);
  }

  function go(z) {
    const next = Math.min(Math.max(Math.round(z), 0), count - 1);
    if (next === state.z) return;
    state.z = next;
    render();
  }

  function setWindow(wl, ww) {
    if (!Number.isFinite(wl) || !Number.isFinite(ww) || ww <= 0) return;
    state.wl = wl;
    state.ww = ww;
    render();
  }

  slider.addEventListener("input", () => go(Number(slider.value)));
  stage.addEventListener("wheel", (event) => {
    event.preventDefault();
    if (event.deltaY !== 0) go(state.z + (event.deltaY > 0 ? 1 : -1));
  }, { passive: false });
  document.addEventListener("keydown", (event) => {
    const t = event.target;
    if (t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement) return;
    const steps = { ArrowUp: 1, ArrowRight: 1, ArrowDown: -1, ArrowLeft: -1, PageUp: 10, PageDown: -10 };
    if (event.key in steps) {
      event.preventDefault();
      go(state.z + steps[event.key]);
    } else if (event.key === "Home") {
      go(0);
    } else if (event.key === "End") {
      go(count - 1);
    }
  });
  for (const b of presets) {
    b.addEventListener("click", () => setWindow(Number(b.dataset.wl), Number(b.dataset.ww)));
  }
  wlInput.addEventListener("change", () => setWindow(Number(wlInput.value), state.ww));
  wwInput.addEventListener("change", () => setWindow(state.wl, Number(wwInput.value)));

  if (overlayImg) {
    const opacity = $("opacity");
    const show = $("show-overlay");
    const applyOpacity = () => { overlayImg.style.opacity = String(Number(opacity.value) / 100); };
    opacity.addEventListener("input", applyOpacity);
    show.addEventListener("change", () => overlayImg.classList.toggle("hidden", !show.checked));
    applyOpacity();
    for (const toggle of classToggles) toggle.addEventListener("change", render);
  }

  render();
})();
