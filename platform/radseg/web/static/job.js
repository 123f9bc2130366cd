// One job: polls its state, appends new log lines, and draws the training curves as inline SVG.
"use strict";
(function () {
  const root = document.getElementById("job");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const every = Number(root.dataset.pollMs) || 2000;
  const FINAL = ["succeeded", "failed", "cancelled"];
  const COLORS = ["#2563eb", "#e6194b", "#3cb44b", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324"];
  const SVG = "http://www.w3.org/2000/svg";
  let logOffset = 0;

  const getJson = async (url) => {
    const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (response.status === 401) { window.location.reload(); throw new Error("logged out"); }
    if (!response.ok) throw new Error(String(response.status));
    return response.json();
  };

  function el(name, attrs, text) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // a line chart of {name: [[x, y], ...]} with axes and a legend; no library
  function draw(svg, series, title) {
    const names = Object.keys(series).filter((n) => series[n].length);
    const box = svg.getBoundingClientRect();
    const W = box.width || 600, H = box.height || 260, L = 48, R = 12, T = 22, B = 28;
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const nodes = [el("text", { x: L, y: 14 }, title)];
    if (!names.length) {
      nodes.push(el("text", { x: L, y: H / 2 }, "no data yet"));
      svg.replaceChildren(...nodes);
      return;
    }
    const points = names.flatMap((n) => series[n]);
    let [x0, x1] = [Math.min(...points.map((p) => p[0])), Math.max(...points.map((p) => p[0]))];
    let [y0, y1] = [Math.min(...points.map((p) => p[1])), Math.max(...points.map((p) => p[1]))];
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
    const sx = (x) => L + (x - x0) / (x1 - x0) * (W - L - R);
    const sy = (y) => H - B - (y - y0) / (y1 - y0) * (H - T - B);
    nodes.push(el("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }));
    nodes.push(el("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
    for (const y of [y0, (y0 + y1) / 2, y1]) nodes.push(el("text", { x: 4, y: sy(y) + 4 }, y.toPrecision(3)));
    for (const x of [x0, x1]) nodes.push(el("text", { x: sx(x) - 8, y: H - 8 }, String(Math.round(x))));
    names.forEach((name, i) => {
      const color = COLORS[i % COLORS.length];
      const pts = series[name];
      const d = pts.map((p, j) => `${j ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join("");
      nodes.push(el("path", { d, fill: "none", stroke: color, "stroke-width": 1.5, "data-series": name }));
      if (pts.length === 1) nodes.push(el("circle", { cx: sx(pts[0][0]), cy: sy(pts[0][1]), r: 3, fill: color }));
      nodes.push(el("text", { x: W - R - 160, y: T + 12 * (i + 1), fill: color }, name));
    });
    svg.replaceChildren(...nodes);
  }

  async function pollCurves() {
    const data = await getJson(root.dataset.curvesUrl);
    const pick = (f) => Object.fromEntries(Object.entries(data.curves).filter(([k]) => f(k.toLowerCase())));
    draw($("chart-loss"), pick((k) => k.includes("loss")), "loss");
    draw($("chart-dice"), pick((k) => k.includes("dice")), "Dice");
  }

  async function poll() {
    let final = false;
    try {
      const job = await getJson(root.dataset.url);
      final = FINAL.includes(job.state);
      const state = $("job-state");
      state.textContent = job.state;
      state.className = `state state-${job.state}`;
      $("job-progress").value = job.progress;
      $("job-pct").textContent = `${Math.round(job.progress * 100)}%`;
      $("job-eta").textContent = job.eta || "–";
      $("job-message").textContent = job.message;
      const cancel = $("cancel-job");
      const retry = $("retry-job");
      if (cancel) cancel.disabled = final;
      if (retry) retry.disabled = !final;
      if (job.result && $("report-body")) {
        const pre = document.createElement("pre");
        pre.className = "log";
        pre.textContent = JSON.stringify(job.result, null, 2);
        $("report-body").replaceChildren(pre);
        $("report").hidden = false;
      }
      // the log (and the result) only for the job's owner and admins
      for (;;) {
        if (!root.dataset.logUrl) break;
        const chunk = await getJson(`${root.dataset.logUrl}?offset=${logOffset}`);
        if (chunk.text) $("job-log").textContent += chunk.text;
        const more = chunk.next_offset > logOffset && chunk.text.length > 0;
        logOffset = chunk.next_offset;
        if (!more) break;
      }
      if (root.dataset.kind === "train") await pollCurves();
    } catch (err) {
      // offline for a moment: try again
    }
    if (!final) window.setTimeout(poll, every);
  }
  poll();
})();
