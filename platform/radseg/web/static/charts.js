// The legends of the training charts (radseg.web.charts draws them on the server): each line has
// a checkbox that hides or shows it. window.radsegCharts.replace(container, html) swaps in newer
// charts (a running job's page) and keeps the lines the user hid.
"use strict";
(function () {
  const hidden = new Map(); // chart id -> labels of the lines hidden

  const labelOf = (box) => box.closest("label").textContent.trim();

  function show(box) {
    const figure = box.closest("figure.line-chart");
    const series = figure.querySelector(`g.series[data-series="${box.dataset.series}"]`);
    if (series) series.classList.toggle("series-hidden", !box.checked);
  }

  document.addEventListener("change", (event) => {
    const box = event.target;
    if (!(box instanceof HTMLInputElement) || box.dataset.series === undefined) return;
    const figure = box.closest("figure.line-chart");
    if (!figure) return;
    if (!hidden.has(figure.id)) hidden.set(figure.id, new Set());
    const names = hidden.get(figure.id);
    if (box.checked) names.delete(labelOf(box)); else names.add(labelOf(box));
    show(box);
  });

  function replace(container, html) {
    container.innerHTML = html;
    for (const box of container.querySelectorAll("figure.line-chart input[data-series]")) {
      const names = hidden.get(box.closest("figure.line-chart").id);
      if (names && names.has(labelOf(box))) {
        box.checked = false;
        show(box);
      }
    }
  }

  window.radsegCharts = { replace };
})();
