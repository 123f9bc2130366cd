// A model version's quality control charts (model version page): one point per ISO week, the
// centre line, each week's limit, the baseline shaded, flagged weeks in red; hovering a week
// shows its numbers under the chart. Drawn as inline SVG from the JSON API, like the job page's
// training curves; no library.
"use strict";
(function () {
  const root = document.getElementById("quality");
  if (!root) return;
  const SVG = "http://www.w3.org/2000/svg";
  const BLUE = "#2563eb", RED = "#dc2626";

  function el(name, attrs, text) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function describe(chart, p) {
    const limit = p.limit === null ? "no limit yet" : `limit ${p.limit.toFixed(3)}`;
    const flag = p.flagged ? " — flagged" : p.baseline ? " (baseline)" : "";
    return `${p.week}: ${chart.label} ${p.value.toFixed(3)}, n=${p.n}, ${limit}${flag}`;
  }

  function draw(svg, chart, readout) {
    const box = svg.getBoundingClientRect();
    const W = box.width || 640, H = box.height || 260, L = 40, R = 12, T = 22, B = 28;
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const pts = chart.points;
    const nodes = [el("text", { x: L, y: 14 }, `${chart.label} per week`)];
    if (!pts.length) {
      nodes.push(el("text", { x: L, y: H / 2 }, "no reviews yet"));
      svg.replaceChildren(...nodes);
      return;
    }
    const step = (W - L - R) / Math.max(pts.length - 1, 1);
    const sx = (i) => L + (pts.length > 1 ? i * step : (W - L - R) / 2);
    const sy = (y) => H - B - Math.min(Math.max(y, 0), 1) * (H - T - B);
    const base = pts.map((p, i) => (p.baseline ? i : -1)).filter((i) => i >= 0);
    if (base.length && chart.center !== null) {
      const x0 = Math.max(L, sx(base[0]) - step / 2), x1 = Math.min(W - R, sx(base[base.length - 1]) + step / 2);
      nodes.push(el("rect", { x: x0, y: T, width: x1 - x0, height: H - T - B, fill: "#eef2ff", class: "baseline" }));
    }
    nodes.push(el("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }));
    nodes.push(el("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
    for (const y of [0, 0.5, 1]) nodes.push(el("text", { x: 4, y: sy(y) + 4 }, y.toFixed(1)));
    for (const i of new Set([0, pts.length - 1])) nodes.push(el("text", { x: sx(i) - 24, y: H - 8 }, pts[i].week));
    if (chart.center !== null) {
      nodes.push(el("line", { x1: L, y1: sy(chart.center), x2: W - R, y2: sy(chart.center), stroke: "#444", "stroke-dasharray": "4 3", class: "center" }));
    }
    const limited = pts.map((p, i) => [i, p.limit]).filter(([, v]) => v !== null);
    if (limited.length) {
      const d = limited.map(([i, v], j) => `${j ? "L" : "M"}${sx(i).toFixed(1)},${sy(v).toFixed(1)}`).join("");
      nodes.push(el("path", { d, fill: "none", stroke: RED, "stroke-dasharray": "2 2", class: "limit" }));
    }
    const d = pts.map((p, i) => `${i ? "L" : "M"}${sx(i).toFixed(1)},${sy(p.value).toFixed(1)}`).join("");
    nodes.push(el("path", { d, fill: "none", stroke: BLUE, "stroke-width": 1.5, class: "values" }));
    pts.forEach((p, i) => {
      const dot = el("circle", {
        cx: sx(i), cy: sy(p.value), r: p.flagged ? 5 : 3, fill: p.flagged ? RED : BLUE,
        class: p.flagged ? "flagged" : "point", "data-week": p.week, tabindex: 0,
      });
      dot.appendChild(el("title", {}, describe(chart, p)));
      const show = () => { readout.textContent = describe(chart, p); };
      dot.addEventListener("mouseenter", show);
      dot.addEventListener("focus", show);
      nodes.push(dot);
    });
    svg.replaceChildren(...nodes);
  }

  async function load() {
    const response = await fetch(root.dataset.url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (!response.ok) return;
    const data = await response.json();
    for (const svg of root.querySelectorAll("svg[data-chart]")) {
      const chart = data.charts[svg.dataset.chart];
      if (chart) draw(svg, chart, document.getElementById(`readout-${svg.dataset.chart}`));
    }
  }
  load();
})();
