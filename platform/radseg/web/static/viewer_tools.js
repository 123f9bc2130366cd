// The viewer's reading tools, added to viewer.js through window.radsegViewer (load after it):
// - measurements: a ruler (mm, from the pixel spacing, so anisotropic pixels measure right), an
//   ellipse and a freehand region (area in mm², HU mean and SD computed on the server from the HU
//   volume). Each is saved with the prediction's review, listed in the panel (click: its slice)
//   and drawn on the image on its slice. Only reviewers save; everyone who sees the prediction
//   sees them.
// - overlay modes: fill, outline (class boundaries) and the difference of the prediction against
//   the labels (false positives and false negatives), all drawn by the server (?mode=...).
// - comfort: Fit and 1:1, cine (play/pause, frames per second), prefetch of a few slices each
//   way, a sheet of every key (?), and a dark reading-room theme (remembered in localStorage).
"use strict";
(function () {
  const viewer = window.radsegViewer;
  if (!viewer) return;
  const { root, stage, state, width, height, count } = viewer;
  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v;
      else if (k in node && typeof v !== "string") node[k] = v;
      else node.setAttribute(k, v);
    }
    node.append(...children);
    return node;
  };
  const csrf = (document.querySelector("meta[name=csrf-token]") || {}).content || "";
  const spacing = [Number(root.dataset.spacingX || 1), Number(root.dataset.spacingY || 1)];
  const controls = root.querySelector(".controls");
  const sliceSection = $("slice").closest("section");
  const helpExtra = [];  // [key, text] of this script's keys, for the sheet
  const key = (name, fn, help) => {
    viewer.addKey(name, fn, help);
    if (name.toUpperCase() !== name) viewer.addKey(name.toUpperCase(), fn);  // with Caps Lock
    helpExtra.push([name, help]);
  };
  const selectTool = (name) => {
    const radio = document.querySelector(`input[name=tool][value="${name}"]`);
    if (!radio) return;
    radio.checked = true;
    radio.dispatchEvent(new Event("change", { bubbles: true }));
  };

  // --- the image fills its pane, keeping the physical aspect ------------------------------------
  const aspect = (width * spacing[0]) / (height * spacing[1]);
  if (aspect > 0 && Number.isFinite(aspect)) root.style.setProperty("--aspect", String(aspect));

  // --- Fit and 1:1 ------------------------------------------------------------------------------
  const zoombar = root.querySelector(".zoombar");
  const fit = () => { state.minZoom = 1; viewer.setZoom(1, 0, 0); };
  const oneToOne = () => {
    // one image pixel per screen pixel (along x; y follows the physical aspect)
    const k = width / (stage.clientWidth * (window.devicePixelRatio || 1));
    fit();
    state.minZoom = Math.min(1, k);
    viewer.setZoom(k, stage.clientWidth / 2, stage.clientHeight / 2);
  };
  const oneButton = el("button", { type: "button", id: "zoom-one", text: "1:1", title: "one image pixel per screen pixel (key 1)" });
  oneButton.addEventListener("click", oneToOne);
  if (zoombar) zoombar.append(oneButton);
  if ($("zoom-reset")) {
    $("zoom-reset").title = "the whole image in the pane (key F)";
    $("zoom-reset").addEventListener("click", () => { state.minZoom = 1; });
  }
  key("f", fit, "Fit: the whole image in the pane");
  key("1", oneToOne, "1:1: one image pixel per screen pixel");

  // --- cine -------------------------------------------------------------------------------------
  const fps = el("input", { type: "number", id: "cine-fps", min: "1", max: "30", step: "1", value: "8", "aria-label": "frames per second" });
  const play = el("button", { type: "button", id: "cine-play", text: "▶ Play", title: "cine through the slices (key P)" });
  let cineTimer = null;
  const cineStep = () => viewer.go(state.z + 1 >= count ? 0 : state.z + 1);
  const cineRate = () => Math.min(Math.max(Number(fps.value) || 8, 1), 30);
  function toggleCine(on) {
    const start = on === undefined ? cineTimer === null : on;
    if (cineTimer !== null) { clearInterval(cineTimer); cineTimer = null; }
    if (start) cineTimer = setInterval(cineStep, 1000 / cineRate());
    play.textContent = start ? "❚❚ Pause" : "▶ Play";
    play.setAttribute("aria-pressed", start ? "true" : "false");
    root.dataset.cine = start ? "playing" : "paused";
  }
  play.addEventListener("click", () => toggleCine());
  fps.addEventListener("change", () => { if (cineTimer !== null) toggleCine(true); });
  sliceSection.append(el("div", { class: "cine" }, play, el("label", {}, fps, " frames/s")));
  key("p", () => toggleCine(), "Cine: play or pause");

  // --- prefetch a few slices each way (viewer.js fetches the next and the previous) -------------
  const PREFETCH_SLICES = 4;
  const PREFETCH_PARALLEL = 2;
  const fetched = new Set();
  let queue = [];
  let inFlight = 0;
  function pump() {
    while (inFlight < PREFETCH_PARALLEL && queue.length) {
      const url = queue.shift();
      if (fetched.has(url)) continue;
      fetched.add(url);
      if (fetched.size > 1024) fetched.delete(fetched.values().next().value);
      inFlight += 1;
      const img = new Image();
      img.onload = img.onerror = () => { inFlight -= 1; pump(); };
      img.src = url;
    }
  }
  function prefetchAround() {
    // nearest first, the way the cine or the last scroll goes first; a new slice drops the rest
    queue = [];
    const overlay = viewer.mainOverlayUrl();
    for (let d = 2; d <= PREFETCH_SLICES; d++) {
      for (const z of [state.z + d, state.z - d]) {
        if (z < 0 || z >= count) continue;
        queue.push(viewer.urlFor(root.dataset.sliceUrl, z, viewer.windowQuery()));
        if (overlay) queue.push(viewer.urlFor(overlay, z, viewer.overlayQuery()));
      }
    }
    pump();
  }

  // --- overlay modes ----------------------------------------------------------------------------
  const labelSet = root.dataset.labelSet || "";
  const hasOverlay = !!$("overlay-img");
  const canDiffer = !!(viewer.predictionUrl && viewer.labelsUrl && labelSet);
  // the server's colours (radseg.web.render.DIFFERENCE_COLORS)
  const DIFFERENCE = [["false positive", "rgb(255, 140, 0)", "predicted, not in the labels"],
                      ["false negative", "rgb(30, 120, 255)", "in the labels, not predicted"]];
  state.overlayMode = "fill";
  viewer.addOverlayParams((layer) => {
    if (layer === "edit" || state.overlayMode === "fill") return [];
    if (state.overlayMode === "difference") {
      return layer === "prediction" ? ["mode=difference", `labels=${labelSet}`] : [];
    }
    return ["mode=outline"];
  });
  const modes = ["fill", "outline", ...(canDiffer ? ["difference"] : [])];
  const swatch = (color) => {
    const node = el("span", { class: "swatch" });
    node.style.background = color;  // through the CSSOM: the CSP refuses style attributes
    return node;
  };
  const legend = el("ul", { class: "difference-legend", id: "difference-legend", hidden: true },
    ...DIFFERENCE.map(([name, color, what]) => el("li", { "data-kind": name.replace(" ", "-") },
      swatch(color), `${name}: ${what}`)));
  function setMode(mode) {
    if (!modes.includes(mode)) return;
    state.overlayMode = mode;
    if (mode === "difference" && state.show === "labels") {
      // the difference is drawn on the prediction's layer
      const radio = document.querySelector("input[name=show][value=prediction]");
      if (radio) { radio.checked = true; radio.dispatchEvent(new Event("change")); }
    }
    for (const r of document.querySelectorAll("input[name=overlay-mode]")) r.checked = r.value === mode;
    legend.hidden = mode !== "difference";
    root.dataset.overlayMode = mode;
    viewer.render();
  }
  if (hasOverlay) {
    const names = { fill: "Fill", outline: "Outline", difference: "Difference vs labels" };
    const group = el("div", { class: "show overlay-mode", role: "radiogroup", "aria-label": "overlay mode" },
      ...modes.map((m) => {
        const input = el("input", { type: "radio", name: "overlay-mode", value: m });
        input.checked = m === "fill";
        input.addEventListener("change", () => setMode(m));
        return el("label", {}, input, ` ${names[m]}`);
      }));
    const anchor = $("show-overlay").closest("label");
    anchor.before(group);
    if (canDiffer) anchor.before(legend);
    // the difference is drawn on the prediction's layer: showing the labels leaves it
    document.addEventListener("change", (event) => {
      const t = event.target;
      if (t instanceof HTMLInputElement && t.name === "show" && t.value === "labels"
          && state.overlayMode === "difference") setMode("fill");
    });
    key("o", () => setMode(modes[(modes.indexOf(state.overlayMode) + 1) % modes.length]),
      `Overlay mode: ${modes.join(", ")} in turn`);
  }

  // --- measurements -----------------------------------------------------------------------------
  const measureUrl = root.dataset.measurementsUrl || "";
  const canMeasure = !!measureUrl && root.dataset.canMeasure === "true";
  const me = root.dataset.user || "";
  let saved = [];
  let drawing = null;
  const svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("class", "layer measures");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  // the value tags are placed where their shape is drawn but kept upright: never in a layer that
  // the display convention mirrors (viewer_planes.js), and their size does not follow the zoom
  const tags = el("div", { class: "layer measure-tags upright" });
  stage.firstElementChild.append(svg, tags);
  const status = el("p", { class: "muted", id: "measure-status", role: "status" });
  const list = el("ol", { class: "measurements", id: "measurement-list" });
  const noteInput = el("input", { type: "text", id: "measure-label", maxlength: "200", placeholder: "e.g. lesion 1" });

  const clamp = ([x, y]) => [Math.min(Math.max(x, 0), width), Math.min(Math.max(y, 0), height)];
  const lengthMm = (a, b) => Math.hypot((b[0] - a[0]) * spacing[0], (b[1] - a[1]) * spacing[1]);
  const fmt = (v, digits) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
  function summary(m) {
    if (m.kind === "ruler") return `${fmt(m.length_mm !== undefined ? m.length_mm : lengthMm(...m.points), 1)} mm`;
    if (m.area_mm2 === undefined) return "…";
    return `${fmt(m.area_mm2, 1)} mm² · ${fmt(m.mean_hu, 1)} ± ${fmt(m.sd_hu, 1)} HU`;
  }

  function shape(m) {
    const p = m.points;
    let node;
    if (m.kind === "ruler") {
      node = document.createElementNS(svgNS, "line");
      node.setAttribute("x1", p[0][0]); node.setAttribute("y1", p[0][1]);
      node.setAttribute("x2", p[1][0]); node.setAttribute("y2", p[1][1]);
    } else if (m.kind === "ellipse") {
      node = document.createElementNS(svgNS, "ellipse");
      node.setAttribute("cx", (p[0][0] + p[1][0]) / 2); node.setAttribute("cy", (p[0][1] + p[1][1]) / 2);
      node.setAttribute("rx", Math.abs(p[1][0] - p[0][0]) / 2); node.setAttribute("ry", Math.abs(p[1][1] - p[0][1]) / 2);
    } else {
      node = document.createElementNS(svgNS, m === drawing ? "polyline" : "polygon");
      node.setAttribute("points", p.map((q) => q.join(",")).join(" "));
    }
    node.setAttribute("vector-effect", "non-scaling-stroke");
    node.setAttribute("class", m === drawing ? "measure drawing" : "measure");
    if (m.id) node.dataset.measurement = String(m.id);
    return node;
  }

  function drawMeasures() {
    const here = saved.filter((m) => m.slice_index === state.z);
    if (drawing && drawing.slice_index === state.z) here.push(drawing);
    svg.replaceChildren(...here.map(shape));
    tags.replaceChildren(...here.map((m) => {
      const shown = m.points.map(([x, y]) => viewer.toStage(x, y));
      const xs = shown.map((q) => q[0]);
      const ys = shown.map((q) => q[1]);
      const tag = el("span", { class: "measure-tag", text: summary(m) });
      // above the shape's right end; left of it near the right edge, under it near the top
      const toLeft = Math.max(...xs) > 0.7;
      const below = Math.min(...ys) < 0.08;
      tag.classList.toggle("to-left", toLeft);
      tag.classList.toggle("below", below);
      tag.style.left = `${(toLeft ? Math.min(...xs) : Math.max(...xs)) * 100}%`;
      tag.style.top = `${(below ? Math.max(...ys) : Math.min(...ys)) * 100}%`;
      if (m.id) tag.dataset.measurement = String(m.id);
      return tag;
    }));
  }

  function listMeasures() {
    if (!saved.length) {
      list.replaceChildren(el("li", { class: "empty", text: "No measurement yet." }));
      return;
    }
    list.replaceChildren(...saved.map((m) => {
      const go = el("button", { type: "button", class: "link goto-measure", text: `slice ${m.slice_index + 1}` });
      go.addEventListener("click", () => viewer.go(m.slice_index));
      const item = el("li", { "data-measurement": String(m.id), "data-slice": String(m.slice_index) },
        el("strong", { text: m.kind }), m.label ? ` “${m.label}”` : "", ` ${summary(m)} · `, go,
        ` · ${m.author}`);
      if (canMeasure && m.author === me) {
        const remove = el("button", { type: "button", class: "link delete-measure", text: "delete", title: "delete this measurement" });
        remove.addEventListener("click", () => removeMeasure(m));
        item.append(" · ", remove);
      }
      return item;
    }));
  }

  async function call(url, options) {
    const response = await fetch(url, {
      credentials: "same-origin",
      ...options,
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrf },
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.detail || `error ${response.status}`);
    return data;
  }

  async function loadMeasures() {
    try {
      saved = (await call(measureUrl, { method: "GET" })).measurements;
    } catch (error) {
      status.textContent = `Measurements not loaded: ${error.message}`;
    }
    listMeasures();
    drawMeasures();
  }

  async function saveMeasure(m) {
    status.textContent = "Measuring…";
    try {
      const body = { kind: m.kind, slice_index: m.slice_index, points: m.points.map(clamp) };
      const note = noteInput.value.trim();
      if (note) body.label = note;
      const row = await call(measureUrl, { method: "POST", body: JSON.stringify(body) });
      saved.push(row);
      status.textContent = `Saved: ${row.kind} ${summary(row)}.`;
    } catch (error) {
      status.textContent = `Not saved: ${error.message}`;
    }
    if (drawing === m) drawing = null;
    listMeasures();
    drawMeasures();
  }

  async function removeMeasure(m) {
    try {
      await call(root.dataset.measurementUrl.replace("{id}", String(m.id)), { method: "DELETE" });
      saved = saved.filter((s) => s !== m);
      status.textContent = `Deleted the ${m.kind} on slice ${m.slice_index + 1}.`;
    } catch (error) {
      status.textContent = `Not deleted: ${error.message}`;
    }
    listMeasures();
    drawMeasures();
  }

  function twoPointTool(kind) {
    return {
      down: (x, y) => { drawing = { kind, slice_index: state.z, points: [clamp([x, y]), clamp([x, y])] }; drawMeasures(); },
      move: (x, y) => { if (drawing) { drawing.points[1] = clamp([x, y]); drawMeasures(); } },
      up: (x, y) => {
        if (!drawing) return;
        drawing.points[1] = clamp([x, y]);
        const [a, b] = drawing.points;
        const big = kind === "ruler" ? Math.hypot(b[0] - a[0], b[1] - a[1]) >= 0.5
          : Math.abs(b[0] - a[0]) >= 1 && Math.abs(b[1] - a[1]) >= 1;
        if (big) saveMeasure(drawing); else { drawing = null; drawMeasures(); }
      },
    };
  }
  const freehandTool = {
    down: (x, y) => { drawing = { kind: "freehand", slice_index: state.z, points: [clamp([x, y])] }; drawMeasures(); },
    move: (x, y) => {
      if (!drawing) return;
      const last = drawing.points[drawing.points.length - 1];
      if (Math.hypot(x - last[0], y - last[1]) < 0.5 || drawing.points.length >= 2000) return;
      drawing.points.push(clamp([x, y]));
      drawMeasures();
    },
    up: () => {
      if (!drawing) return;
      if (drawing.points.length >= 3) saveMeasure(drawing); else { drawing = null; drawMeasures(); }
    },
  };

  if (measureUrl) {
    const panel = el("section", { id: "measurements-panel" },
      el("h2", { text: "Measurements" }), list, status);
    if (canMeasure) panel.append(el("label", {}, "Note for the next one ", noteInput));
    const decisions = $("reviews");
    if (decisions) decisions.closest("section").after(panel); else controls.append(panel);
    if (canMeasure) {
      const tools = root.querySelector(".tools");
      const add = (value, label, title) => {
        tools.append(el("label", { title }, el("input", { type: "radio", name: "tool", value }), ` ${label}`));
      };
      add("ruler", "Ruler", "distance in mm (key R)");
      add("ellipse", "Ellipse", "area, HU mean and SD (key E)");
      add("freehand", "Freehand", "a region drawn by hand: area, HU mean and SD (key H)");
      viewer.addTool("ruler", twoPointTool("ruler"));
      viewer.addTool("ellipse", twoPointTool("ellipse"));
      viewer.addTool("freehand", freehandTool);
      key("r", () => selectTool("ruler"), "Ruler tool: drag to measure a distance (mm)");
      key("e", () => selectTool("ellipse"), "Ellipse tool: drag a box; area, HU mean and SD");
      key("h", () => selectTool("freehand"), "Freehand tool: draw a region; area, HU mean and SD");
    }
    loadMeasures();
  }
  key("w", () => selectTool("window"), "Window/level tool (drag)");

  // --- dark reading-room theme ------------------------------------------------------------------
  const THEME_KEY = "radseg.viewer.theme";
  const themeButton = el("button", { type: "button", id: "theme-toggle", title: "dark reading-room theme (remembered on this computer)" });
  function setTheme(dark) {
    document.body.classList.toggle("theme-dark", dark);
    themeButton.textContent = dark ? "Light theme" : "Dark theme";
    themeButton.setAttribute("aria-pressed", dark ? "true" : "false");
    try { window.localStorage.setItem(THEME_KEY, dark ? "dark" : "light"); } catch (e) { /* private mode */ }
  }
  let stored = null;
  try { stored = window.localStorage.getItem(THEME_KEY); } catch (e) { /* private mode */ }
  setTheme(stored === "dark");
  themeButton.addEventListener("click", () => setTheme(!document.body.classList.contains("theme-dark")));

  // --- the keyboard-shortcut sheet (?) ----------------------------------------------------------
  //: viewer.js's own keys and mouse gestures
  const BUILT_IN = [
    ["↑ / → , ↓ / ←", "Next / previous slice"], ["Page Up / Page Down", "10 slices up / down"],
    ["Home / End", "First / last slice"], ["Mouse wheel", "Scroll the slices"],
    ["+ / −", "Zoom in / out"], ["Ctrl + wheel", "Zoom at the pointer"],
    ["Shift + drag, middle drag", "Pan"],
  ];
  if ($("next-doubtful")) BUILT_IN.push(["D", "Next most doubtful slice"]);
  const sheet = el("dialog", { id: "shortcut-sheet", class: "shortcut-sheet", "aria-label": "keyboard shortcuts" });
  const keyName = (k) => (k.length === 1 ? k.toUpperCase() : k);
  function openSheet() {
    const ours = new Set([...helpExtra.map(([k]) => k), "?"]);
    const others = viewer.keyHelp().filter(([k]) => !ours.has(k));  // keys of the other scripts
    const rows = [...BUILT_IN, ...helpExtra.map(([k, t]) => [keyName(k), t]),
      ...others.map(([k, t]) => [keyName(k), t]), ["?", "This sheet (Esc closes it)"]];
    sheet.replaceChildren(
      el("h2", { text: "Keyboard shortcuts" }),
      el("table", { class: "grid" }, el("tbody", {}, ...rows.map(([k, t]) =>
        el("tr", {}, el("th", {}, el("kbd", { text: k })), el("td", { text: t }))))),
      el("form", { method: "dialog" }, el("button", { type: "submit", text: "Close" })));
    if (!sheet.open) sheet.showModal();
  }
  document.body.append(sheet);
  viewer.addKey("?", openSheet, "This sheet");
  const helpButton = el("button", { type: "button", id: "shortcuts", text: "Keys ?", title: "keyboard shortcuts (key ?)" });
  helpButton.addEventListener("click", openSheet);
  sliceSection.append(el("div", { class: "zoombar" }, helpButton, themeButton));

  viewer.onRender(() => { drawMeasures(); prefetchAround(); });
  drawMeasures();
  prefetchAround();
})();
