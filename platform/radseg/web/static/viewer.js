// The slice viewer: server-rendered PNGs for the slice (windowed) and the overlays.
// Scroll with the slider, the mouse wheel over the image, or the arrow / Page keys; Ctrl+wheel
// zooms. The mouse tool decides what a left drag does: window/level, pan, pin a comment, or paint
// with the brush / eraser. Brush strokes are kept in voxel coordinates and sent to the server,
// which paints the same strokes on the stored mask and saves a new label version.
// Where the prediction has an uncertainty map: a heat-map layer (on/off, opacity), a strip of
// each slice's uncertainty beside the slider (click to go there), and "next most doubtful
// slice" (the button, or the D key) through the slices from the most doubtful down.
// Other viewer scripts (loaded after this one) extend it through window.radsegViewer: they read
// the state, run after each render (onRender), and add mouse tools (addTool) and keys (addKey).
"use strict";
(function () {
  const root = document.getElementById("viewer");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const count = Number(root.dataset.slices);
  const width = Number(root.dataset.width);
  const height = Number(root.dataset.height);
  const sliceUrl = root.dataset.sliceUrl;
  const predictionUrl = root.dataset.overlayUrl || "";
  const labelsUrl = root.dataset.labelsUrl || "";
  const uncertaintyUrl = root.dataset.uncertaintyUrl || "";
  const uncertaintyImg = $("uncertainty-img");
  const parseList = (raw) => { try { return JSON.parse(raw || "[]"); } catch (e) { return []; } };
  const sliceDoubt = parseList(root.dataset.sliceDoubt);
  const doubtful = parseList(root.dataset.doubtful);
  const stage = $("stage");
  const sideStage = $("stage-side");
  const sidePane = $("pane-side");
  const sliceImg = $("slice-img");
  const overlayImg = $("overlay-img");
  const sideSliceImg = $("slice-img-side");
  const sideOverlayImg = $("overlay-img-side");
  const canvas = $("edit-canvas");
  const pins = $("pins");
  const slider = $("slice");
  const label = $("slice-label");
  const wlInput = $("wl");
  const wwInput = $("ww");
  const presets = Array.from(document.querySelectorAll(".preset"));
  const classToggles = Array.from(document.querySelectorAll(".class-toggle"));
  const csrf = (document.querySelector("meta[name=csrf-token]") || {}).content || "";
  const state = {
    z: Number(slider.value), wl: Number(wlInput.value), ww: Number(wwInput.value),
    zoom: 1, tx: 0, ty: 0, tool: "window",
    show: root.dataset.show || "prediction",
    strokes: [],
  };
  const hooks = { render: [], tools: {}, keys: {}, help: [], overlayParams: [] };
  if (!predictionUrl) state.show = "labels";
  if (!labelsUrl) state.show = "prediction";

  // keep the physical aspect ratio (pixel spacing may differ along x and y)
  const w = width * Number(root.dataset.spacingX || 1);
  const h = height * Number(root.dataset.spacingY || 1);
  for (const s of [stage, sideStage]) if (s && w > 0 && h > 0) s.style.aspectRatio = `${w} / ${h}`;
  for (const swatch of document.querySelectorAll(".swatch[data-color]")) {
    swatch.style.background = swatch.dataset.color;
  }

  const urlFor = (template, z, query) => template.replace("{z}", String(z)) + (query || "");
  const windowQuery = () => `?wl=${encodeURIComponent(state.wl)}&ww=${encodeURIComponent(state.ww)}`;
  // which: the layer asking ("prediction", "labels", or "edit" for the brush's canvas); other
  // viewer scripts add parameters (e.g. the overlay mode) through addOverlayParams
  const overlayQuery = (which) => {
    const hidden = classToggles.filter((c) => !c.checked).map((c) => c.dataset.classId);
    const parts = hidden.length ? [`hide=${hidden.join(",")}`] : [];
    for (const fn of hooks.overlayParams) parts.push(...fn(which || mainLayer()));
    return parts.length ? `?${parts.join("&")}` : "";
  };
  // the main pane shows the prediction, or the labels when chosen; side by side adds the labels
  const mainLayer = () => (state.show === "labels" ? "labels" : "prediction");
  const mainOverlayUrl = () => (state.show === "labels" ? labelsUrl : predictionUrl);

  function prefetch(z) {
    if (z < 0 || z >= count) return;
    new Image().src = urlFor(sliceUrl, z, windowQuery());
    if (mainOverlayUrl()) new Image().src = urlFor(mainOverlayUrl(), z, overlayQuery(mainLayer()));
  }

  function applyTransform() {
    const t = `translate(${state.tx}px, ${state.ty}px) scale(${state.zoom})`;
    for (const s of [stage, sideStage]) {
      if (!s) continue;
      s.firstElementChild.style.transform = t;
      s.style.setProperty("--zoom", String(state.zoom));  // text on the image keeps its size
    }
    $("zoom-label").textContent = `${Math.round(state.zoom * 100)}%`;
  }

  function render() {
    sliceImg.src = urlFor(sliceUrl, state.z, windowQuery());
    if (overlayImg && mainOverlayUrl()) overlayImg.src = urlFor(mainOverlayUrl(), state.z, overlayQuery(mainLayer()));
    if (uncertaintyImg && !uncertaintyImg.classList.contains("hidden")) {
      uncertaintyImg.src = urlFor(uncertaintyUrl, state.z, "");
    }
    drawStripMarker();
    const side = state.show === "side" && !!labelsUrl;
    if (sidePane) sidePane.hidden = !side;
    if (side) {
      sideSliceImg.src = sliceImg.src;
      sideOverlayImg.src = urlFor(labelsUrl, state.z, overlayQuery("labels"));
    }
    const caption = $("caption-main");
    if (caption) caption.textContent = side ? "Prediction" : "";
    slider.value = String(state.z);
    label.textContent = `${state.z + 1} / ${count}`;
    root.dataset.z = String(state.z);
    wlInput.value = String(state.wl);
    wwInput.value = String(state.ww);
    for (const b of presets) {
      const on = Number(b.dataset.wl) === state.wl && Number(b.dataset.ww) === state.ww;
      b.setAttribute("aria-pressed", on ? "true" : "false");
    }
    drawPins();
    if (editing()) redrawCanvas();
    prefetch(state.z + 1);
    prefetch(state.z - 1);
    for (const fn of hooks.render) fn(state);
  }

  function go(z) {
    const next = Math.min(Math.max(Math.round(z), 0), count - 1);
    if (next === state.z) return;
    state.z = next;
    render();
  }

  function setWindow(wl, ww) {
    if (!Number.isFinite(wl) || !Number.isFinite(ww) || ww <= 0) return;
    state.wl = Math.round(wl);
    state.ww = Math.max(1, Math.round(ww));
    render();
  }

  function setZoom(zoom, cx, cy) {
    // keep the point under (cx, cy) (stage pixels) where it is
    const next = Math.min(Math.max(zoom, state.minZoom || 1), 16);
    const k = next / state.zoom;
    state.tx = cx - (cx - state.tx) * k;
    state.ty = cy - (cy - state.ty) * k;
    state.zoom = next;
    if (next === 1) { state.tx = 0; state.ty = 0; }
    applyTransform();
  }

  // stage pixel -> voxel (x, y) of the slice, undoing zoom and pan
  function voxelAt(event) {
    const rect = stage.getBoundingClientRect();
    const sx = (event.clientX - rect.left - state.tx) / state.zoom;
    const sy = (event.clientY - rect.top - state.ty) / state.zoom;
    const x = sx / rect.width * width;
    const y = sy / rect.height * height;
    // viewer_planes.js may flip the image to the display convention (data-flip-x / -y)
    return [root.dataset.flipX === "true" ? width - x : x, root.dataset.flipY === "true" ? height - y : y];
  }
  // voxel (x, y) of the slice -> where it is drawn, as fractions of the stage before zoom and pan
  // (the inverse of voxelAt's flips): for what is drawn upright, e.g. text, never mirrored
  function toStage(x, y) {
    const fx = x / width;
    const fy = y / height;
    return [root.dataset.flipX === "true" ? 1 - fx : fx, root.dataset.flipY === "true" ? 1 - fy : fy];
  }
  // keys typed into a field are the field's; a radio, checkbox or button keeps only its arrows
  // and space, so that a shortcut works right after a click on a control; an open dialog (the
  // key sheet) keeps every key, a closed one none (focus may stay on it after Escape closed it)
  function keyForField(event) {
    const t = event.target;
    if (t instanceof Element && t.closest("dialog")) return Boolean(t.closest("dialog[open]"));
    if (t instanceof HTMLTextAreaElement || t instanceof HTMLSelectElement) return true;
    if (!(t instanceof HTMLInputElement)) return false;
    if (!["radio", "checkbox", "button", "submit"].includes(t.type)) return true;
    return event.key.startsWith("Arrow") || event.key === " ";
  }

  // --- pins -------------------------------------------------------------------------------
  const reviewPins = Array.from(document.querySelectorAll("#reviews li[data-x]")).map((li) => ({
    z: Number(li.dataset.slice), x: Number(li.dataset.x), y: Number(li.dataset.y), id: li.dataset.review,
  }));
  let pending = null;
  function drawPins() {
    if (!pins) return;
    const marks = reviewPins.filter((p) => p.z === state.z);
    if (pending && pending.z === state.z) marks.push({ ...pending, id: "new" });
    pins.replaceChildren(...marks.map((p) => {
      const dot = document.createElement("span");
      dot.className = p.id === "new" ? "pin pin-new" : "pin";
      dot.dataset.review = p.id;
      dot.style.left = `${p.x / width * 100}%`;
      dot.style.top = `${p.y / height * 100}%`;
      return dot;
    }));
  }
  function pinAt(x, y) {
    pending = { z: state.z, x: Math.round(x * 10) / 10, y: Math.round(y * 10) / 10 };
    $("pin-slice").value = String(pending.z);
    $("pin-x").value = String(pending.x);
    $("pin-y").value = String(pending.y);
    $("pin-label").textContent = `Pinned to slice ${pending.z + 1} at (${pending.x}, ${pending.y}).`;
    drawPins();
  }
  for (const b of document.querySelectorAll("button.goto")) {
    b.addEventListener("click", () => go(Number(b.dataset.slice)));
  }

  // --- brush and eraser -------------------------------------------------------------------
  const ctx = canvas ? canvas.getContext("2d") : null;
  const editing = () => !!ctx && (state.tool === "brush" || state.tool === "eraser");
  const brushClass = $("brush-class");
  const brushRadius = $("brush-radius");
  const colorOf = (classId) => {
    const option = brushClass && brushClass.querySelector(`option[value="${classId}"]`);
    return option ? option.dataset.color : "#ffffff";
  };

  function paintStroke(stroke) {
    ctx.save();
    ctx.globalCompositeOperation = stroke.class_id === 0 ? "destination-out" : "source-over";
    ctx.fillStyle = stroke.class_id === 0 ? "#000" : colorOf(stroke.class_id);
    ctx.strokeStyle = ctx.fillStyle;
    ctx.lineWidth = stroke.radius * 2;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    const [x0, y0] = stroke.points[0];
    ctx.beginPath();
    ctx.arc(x0, y0, stroke.radius, 0, 2 * Math.PI);
    ctx.fill();
    if (stroke.points.length > 1) {
      ctx.beginPath();
      ctx.moveTo(x0, y0);
      for (const [x, y] of stroke.points.slice(1)) ctx.lineTo(x, y);
      ctx.stroke();
    }
    ctx.restore();
  }

  function redrawCanvas() {
    const z = state.z;
    const base = new Image();
    base.onload = () => {
      if (state.z !== z) return;
      ctx.clearRect(0, 0, canvas.width, canvas.height);
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(base, 0, 0, canvas.width, canvas.height);
      for (const s of state.strokes) if (s.z === z) paintStroke(s);
      canvas.dataset.z = String(z);
    };
    base.src = urlFor(mainOverlayUrl(), z, overlayQuery("edit"));
  }

  function updateEditing() {
    if (!canvas) return;
    const on = editing();
    canvas.hidden = !on;
    if (overlayImg) overlayImg.classList.toggle("editing", on);
    if (on) redrawCanvas();
    const n = $("stroke-count");
    if (n) n.textContent = String(state.strokes.length);
  }

  async function saveCorrection() {
    const status = $("correction-status");
    if (!state.strokes.length) { status.textContent = "Nothing to save: paint on the image first."; return; }
    status.textContent = "Saving…";
    const base = state.show === "labels" && root.dataset.labelSet ? Number(root.dataset.labelSet) : null;
    const response = await fetch(root.dataset.correctUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrf },
      body: JSON.stringify({ strokes: state.strokes, base_label_set: base }),
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) { status.textContent = `Not saved: ${data.detail || response.status}`; return; }
    state.strokes = [];
    if (root.dataset.afterSave === "reload") {  // a reader's copy or a draft: saved in place
      window.location.hash = `z=${state.z}`;
      window.location.reload();
      return;
    }
    status.textContent = `Saved as label version ${data.version}.`;
    const params = new URLSearchParams({ prediction: root.dataset.prediction, labels: data.id, show: "labels" });
    window.location.assign(`${root.dataset.viewerUrl}?${params}#z=${state.z}`);
  }

  // --- mouse ------------------------------------------------------------------------------
  let drag = null;
  stage.addEventListener("pointerdown", (event) => {
    if (event.button !== 0 && event.button !== 1) return;
    event.preventDefault();
    stage.focus();
    const tool = event.button === 1 || event.shiftKey ? "pan" : state.tool;
    const [vx, vy] = voxelAt(event);
    drag = { tool, x: event.clientX, y: event.clientY, wl: state.wl, ww: state.ww, tx: state.tx, ty: state.ty };
    if (tool === "pin") { pinAt(vx, vy); drag = null; return; }
    if (hooks.tools[tool]) drag.handler = hooks.tools[tool];
    if (drag.handler && drag.handler.down) drag.handler.down(vx, vy, event);
    if (tool === "brush" || tool === "eraser") {
      const stroke = {
        z: state.z, class_id: tool === "eraser" ? 0 : Number(brushClass.value),
        radius: Number(brushRadius.value), points: [[vx, vy]],
      };
      state.strokes.push(stroke);
      drag.stroke = stroke;
      paintStroke(stroke);
      updateEditing();
    }
    stage.setPointerCapture(event.pointerId);
  });
  stage.addEventListener("pointermove", (event) => {
    if (!drag) return;
    if (drag.handler) {
      if (drag.handler.move) drag.handler.move(...voxelAt(event), event);
      return;
    }
    const dx = event.clientX - drag.x;
    const dy = event.clientY - drag.y;
    if (drag.tool === "window") {
      // right: wider window; down: higher level (the usual radiology convention)
      setWindow(drag.wl + dy * 2, drag.ww + dx * 4);
    } else if (drag.tool === "pan") {
      state.tx = drag.tx + dx;
      state.ty = drag.ty + dy;
      applyTransform();
    } else if (drag.stroke) {
      const [vx, vy] = voxelAt(event);
      const last = drag.stroke.points[drag.stroke.points.length - 1];
      if (Math.hypot(vx - last[0], vy - last[1]) < 0.25) return;
      drag.stroke.points.push([vx, vy]);
      ctx.save();
      paintStroke({ ...drag.stroke, points: [last, [vx, vy]] });
      ctx.restore();
    }
  });
  const endDrag = (event) => {
    if (drag && drag.handler && drag.handler.up) drag.handler.up(...voxelAt(event), event);
    drag = null;
  };
  stage.addEventListener("pointerup", endDrag);
  stage.addEventListener("pointercancel", endDrag);
  stage.addEventListener("wheel", (event) => {
    event.preventDefault();
    if (event.ctrlKey || event.metaKey) {
      const rect = stage.getBoundingClientRect();
      setZoom(state.zoom * (event.deltaY < 0 ? 1.25 : 0.8), event.clientX - rect.left, event.clientY - rect.top);
    } else if (event.deltaY !== 0) {
      go(state.z + (event.deltaY > 0 ? 1 : -1));
    }
  }, { passive: false });
  document.addEventListener("keydown", (event) => {
    if (keyForField(event)) return;
    const steps = { ArrowUp: 1, ArrowRight: 1, ArrowDown: -1, ArrowLeft: -1, PageUp: 10, PageDown: -10 };
    if (event.key in steps) {
      event.preventDefault();
      go(state.z + steps[event.key]);
    } else if (event.key === "Home") {
      go(0);
    } else if (event.key === "End") {
      go(count - 1);
    } else if (event.key === "+" || event.key === "=") {
      setZoom(state.zoom * 1.25, stage.clientWidth / 2, stage.clientHeight / 2);
    } else if (event.key === "-") {
      setZoom(state.zoom * 0.8, stage.clientWidth / 2, stage.clientHeight / 2);
    } else if (hooks.keys[event.key] && !event.ctrlKey && !event.metaKey && !event.altKey) {
      // (Ctrl+R, Ctrl+F, ... stay the browser's)
      event.preventDefault();
      hooks.keys[event.key](event);
    }
  });

  // --- controls ---------------------------------------------------------------------------
  slider.addEventListener("input", () => go(Number(slider.value)));
  for (const b of presets) {
    b.addEventListener("click", () => setWindow(Number(b.dataset.wl), Number(b.dataset.ww)));
  }
  wlInput.addEventListener("change", () => setWindow(Number(wlInput.value), state.ww));
  wwInput.addEventListener("change", () => setWindow(state.wl, Number(wwInput.value)));
  $("zoom-in").addEventListener("click", () => setZoom(state.zoom * 1.25, stage.clientWidth / 2, stage.clientHeight / 2));
  $("zoom-out").addEventListener("click", () => setZoom(state.zoom * 0.8, stage.clientWidth / 2, stage.clientHeight / 2));
  $("zoom-reset").addEventListener("click", () => setZoom(1, 0, 0));
  // delegated, so that the tools other viewer scripts add to the radio group work the same way
  document.addEventListener("change", (event) => {
    const radio = event.target;
    if (!(radio instanceof HTMLInputElement) || radio.name !== "tool" || !radio.checked) return;
    state.tool = radio.value;
    stage.dataset.tool = radio.value;
    updateEditing();
  });
  for (const radio of document.querySelectorAll("input[name=show]")) {
    radio.checked = radio.value === state.show;
    radio.addEventListener("change", () => {
      if (state.strokes.length && !window.confirm("Switching discards the unsaved strokes. Switch?")) {
        for (const r of document.querySelectorAll("input[name=show]")) r.checked = r.value === state.show;
        return;
      }
      state.strokes = [];
      state.show = radio.value;
      updateEditing();
      render();
    });
  }
  if (overlayImg) {
    const opacity = $("opacity");
    const show = $("show-overlay");
    const applyOpacity = () => {
      const value = String(Number(opacity.value) / 100);
      for (const el of [overlayImg, sideOverlayImg, canvas]) if (el) el.style.opacity = value;
    };
    opacity.addEventListener("input", applyOpacity);
    show.addEventListener("change", () => {
      for (const el of [overlayImg, sideOverlayImg, canvas]) if (el) el.classList.toggle("hidden", !show.checked);
    });
    applyOpacity();
    for (const toggle of classToggles) toggle.addEventListener("change", render);
  }
  if ($("undo-stroke")) {
    $("undo-stroke").addEventListener("click", () => { state.strokes.pop(); updateEditing(); });
    $("save-correction").addEventListener("click", saveCorrection);
  }

  // --- where the model doubts ---------------------------------------------------------------
  const strip = $("doubt-strip");
  const stripCtx = strip ? strip.getContext("2d") : null;
  let stripBase = null;
  function drawStrip() {
    if (!stripCtx) return;
    const top = Math.max(...sliceDoubt, 1e-6);
    stripCtx.clearRect(0, 0, strip.width, strip.height);
    for (let z = 0; z < sliceDoubt.length && z < strip.width; z++) {
      const t = Math.min(1, sliceDoubt[z] / top);
      stripCtx.fillStyle = `rgba(255, ${Math.round(255 * (1 - t))}, 0, ${0.15 + 0.85 * t})`;
      stripCtx.fillRect(z, 0, 1, strip.height);
    }
    stripBase = stripCtx.getImageData(0, 0, strip.width, strip.height);
  }
  function drawStripMarker() {
    if (!stripCtx || !stripBase) return;
    stripCtx.putImageData(stripBase, 0, 0);
    stripCtx.fillStyle = "rgba(0, 0, 0, 0.8)";
    stripCtx.fillRect(state.z, 0, 1, strip.height);
    strip.dataset.z = String(state.z);
  }
  function nextDoubtful() {
    if (!doubtful.length) return;
    const at = doubtful.indexOf(state.z);
    go(doubtful[(at + 1) % doubtful.length]);
  }
  if (strip) {
    strip.addEventListener("click", (event) => {
      const rect = strip.getBoundingClientRect();
      go(Math.floor((event.clientX - rect.left) / rect.width * count));
    });
    drawStrip();
  }
  if (uncertaintyImg) {
    const toggle = $("show-uncertainty");
    const opacity = $("uncertainty-opacity");
    const applyOpacity = () => { uncertaintyImg.style.opacity = String(Number(opacity.value) / 100); };
    toggle.addEventListener("change", () => {
      uncertaintyImg.classList.toggle("hidden", !toggle.checked);
      render();
    });
    opacity.addEventListener("input", applyOpacity);
    applyOpacity();
    $("next-doubtful").addEventListener("click", nextDoubtful);
    document.addEventListener("keydown", (event) => {
      if (keyForField(event) || event.ctrlKey || event.metaKey || event.altKey) return;
      if (event.key === "d" || event.key === "D") { event.preventDefault(); nextDoubtful(); }
    });
  }

  // the extension points of the other viewer scripts
  window.radsegViewer = {
    root, stage, state, width, height, count, labelsUrl, predictionUrl,
    go, render, setZoom, applyTransform, voxelAt, toStage, keyForField, urlFor, windowQuery, overlayQuery, mainOverlayUrl,
    onRender: (fn) => { hooks.render.push(fn); },
    addTool: (name, handler) => { hooks.tools[name] = handler; },  // {down, move, up}(vx, vy, event)
    addKey: (key, fn, help) => { hooks.keys[key] = fn; if (help) hooks.help.push([key, help]); },
    keyHelp: () => hooks.help.slice(),  // [key, what it does] of the keys added with a help text
    addOverlayParams: (fn) => { hooks.overlayParams.push(fn); },  // fn(layer) -> ["name=value"]
  };

  const fromHash = /z=(\d+)/.exec(window.location.hash);
  if (fromHash) state.z = Math.min(Number(fromHash[1]), count - 1);
  applyTransform();
  render();
})();
