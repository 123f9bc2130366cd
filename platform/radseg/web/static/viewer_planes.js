// Orientation, readout and three planes for the slice viewer (viewer.js), through its extension
// point window.radsegViewer.
// - Letters on the four edges of every image (R/L, A/P, S/I), computed on the server from the
//   series' direction cosines (radseg.imaging.orientation) and given in #viewer's data-planes.
// - Under the cursor: the voxel index (i, j, k), its centre in mm (LPS) and its HU value, asked
//   from GET /series/<id>/voxel (the HU cache, not the windowed image); the slice's position in
//   mm, the slice thickness (where the slices state it) and the spacing between slices are always
//   shown.
// - One plane / three planes: the stored slices (with every tool of viewer.js) and the two other
//   anatomical planes, rendered on the server (/series/<id>/slice/<plane>/<index>.png and the
//   overlays' twins), with a crosshair linking them: click in a plane (or use the Crosshair tool
//   on the main image) and the others follow; the wheel over a plane steps through its slices.
"use strict";
(function () {
  const viewer = window.radsegViewer;
  if (!viewer) return;
  const { root, stage, state, width, height, count } = viewer;
  let info = null;
  try { info = JSON.parse(root.dataset.planes || "null"); } catch (e) { info = null; }
  if (!info) return;
  const $ = (id) => document.getElementById(id);
  const acquisition = info.acquisition;
  const sliceUrl = root.dataset.sliceUrl;
  const voxelUrl = root.dataset.voxelUrl;
  const planeUrl = (template, plane, index, query) =>
    template.replace("{z}.png", `${plane}/${index}.png`) + (query || "");
  const el = (tag, className, text) => {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const fmt = (v) => (Math.round(v * 10) / 10).toFixed(1);

  // the cursor: one voxel (i, j, k) that every plane shows
  const cursor = [Math.floor(width / 2), Math.floor(height / 2), state.z];

  function addLetters(target, letters) {
    for (const edge of ["left", "right", "top", "bottom"]) {
      target.append(el("span", `orient orient-${edge}`, letters[edge]));
    }
  }

  // --- the main image: flips, letters, crosshair ------------------------------------------
  root.dataset.flipX = String(!!acquisition.column_flip);
  root.dataset.flipY = String(!!acquisition.row_flip);
  addLetters(stage, acquisition.letters);
  const mainCross = el("div", "layer crosshair hidden");
  const mainH = el("span", "cross-h");
  const mainV = el("span", "cross-v");
  mainCross.append(mainH, mainV);
  stage.querySelector(".zoom").append(mainCross);

  // --- readout ----------------------------------------------------------------------------
  const mainPane = stage.closest(".pane");
  const readout = el("p", "readout", "Point at the image for its HU value.");
  readout.id = "readout";
  const position = el("p", "readout");
  position.id = "slice-position";
  mainPane.append(position, readout);
  const direction = info.direction;  // row-major; column a is voxel axis a in LPS
  const normal = [direction[2], direction[5], direction[8]];
  const normalName = acquisition.plane === "axial" ? "S" : acquisition.plane === "coronal" ? "P" : "L";
  const along = normal[{ S: 2, P: 1, L: 0 }[normalName]] < 0 ? -1 : 1;

  function showSlicePosition() {
    // where slice k lies along its normal: origin · n + k × spacing (n is a unit column)
    const offset = info.origin.reduce((sum, o, axis) => sum + o * normal[axis], 0);
    const at = along * (offset + state.z * info.spacing[2]);
    // the thickness the slices state, beside the spacing that places them (they differ for
    // overlapping or gapped reconstructions); series ingested before it was kept show spacing only
    const thickness = info.thickness ? `thickness ${fmt(info.thickness)} mm · ` : "";
    position.textContent = `Slice ${state.z + 1} / ${count} · ${normalName} ${fmt(at)} mm · ` +
      `${thickness}spacing ${fmt(info.spacing[2])} mm`;
    position.dataset.mm = String(at);
  }

  let asked = null;
  let inFlight = false;
  let last = null;  // the voxel last asked for: moves within one voxel ask nothing
  async function readVoxel(index) {
    if (last && index.every((v, axis) => v === last[axis])) return;
    last = index.slice();
    asked = index;
    if (inFlight) return;  // one question at a time; the latest cursor is asked next
    inFlight = true;
    try {
      while (asked) {
        const [i, j, k] = asked;
        asked = null;
        const response = await fetch(`${voxelUrl}?i=${i}&j=${j}&k=${k}`, {
          credentials: "same-origin", headers: { Accept: "application/json" },
        });
        if (!response.ok) continue;
        const data = await response.json();
        const [x, y, z] = data.position_mm;
        readout.textContent = `(${data.index.join(", ")}) · LPS ${fmt(x)}, ${fmt(y)}, ${fmt(z)} mm · ` +
          `${Math.round(data.hu * 10) / 10} HU`;
        readout.dataset.index = data.index.join(",");
        readout.dataset.hu = String(data.hu);
      }
    } finally {
      inFlight = false;
    }
  }

  function voxelOf(vx, vy) {
    const i = Math.floor(vx);
    const j = Math.floor(vy);
    if (i < 0 || j < 0 || i >= width || j >= height) return null;
    return [i, j, state.z];
  }
  stage.addEventListener("pointermove", (event) => {
    const index = voxelOf(...viewer.voxelAt(event));
    if (index) readVoxel(index);
  });
  stage.addEventListener("pointerdown", (event) => {
    const index = voxelOf(...viewer.voxelAt(event));
    if (index) readVoxel(index);
  });

  // --- the other planes -------------------------------------------------------------------
  const others = Object.values(info.planes).filter((p) => p.axis !== 2);
  const panes = [];
  const row = stage.closest(".panes");
  const column = el("div", "plane-column");
  column.hidden = true;
  for (const layout of others) {
    const figure = el("figure", "pane plane-pane");
    figure.dataset.plane = layout.plane;
    figure.append(el("figcaption", "", layout.plane[0].toUpperCase() + layout.plane.slice(1)));
    const box = el("div", "stage plane-stage");
    box.id = `stage-${layout.plane}`;
    const [w, h] = [layout.size[0] * layout.spacing[0], layout.size[1] * layout.spacing[1]];
    box.style.aspectRatio = `${w} / ${h}`;
    box.style.setProperty("--aspect", String(w / h));  // its own, for the height it may take
    const image = el("img", "layer");
    image.alt = `${layout.plane} plane`;
    image.draggable = false;
    const overlay = el("img", "layer overlay");
    overlay.alt = "";
    overlay.draggable = false;
    const doubt = el("img", "layer overlay uncertainty hidden");
    doubt.alt = "";
    const cross = el("div", "layer crosshair");
    const crossH = el("span", "cross-h");
    const crossV = el("span", "cross-v");
    cross.append(crossH, crossV);
    box.append(image, overlay, doubt, cross);
    addLetters(box, layout.letters);
    figure.append(box);
    column.append(figure);
    const pane = { layout, box, image, overlay, doubt, crossH, crossV };
    // the voxel under a pointer on this plane (null outside the image)
    const voxelHere = (event) => {
      const rect = box.getBoundingClientRect();
      const col = Math.floor((event.clientX - rect.left) / rect.width * layout.size[0]);
      const r = Math.floor((event.clientY - rect.top) / rect.height * layout.size[1]);
      if (col < 0 || r < 0 || col >= layout.size[0] || r >= layout.size[1]) return null;
      const index = cursor.slice();
      index[layout.column] = layout.column_flip ? layout.size[0] - 1 - col : col;
      index[layout.row] = layout.row_flip ? layout.size[1] - 1 - r : r;
      return index;
    };
    const follow = (event) => {
      const index = voxelHere(event);
      if (!index) return;
      readVoxel(index);
      if (event.type === "pointermove" && event.buttons !== 1) return;
      event.preventDefault();
      cursor.splice(0, 3, ...index);
      if (cursor[2] !== state.z) viewer.go(cursor[2]);  // renders, and so draws every plane
      else drawPlanes();
    };
    box.addEventListener("pointerdown", follow);
    box.addEventListener("pointermove", follow);
    // the wheel steps through this plane's own slices, as on the main image
    box.addEventListener("wheel", (event) => {
      event.preventDefault();
      if (event.deltaY === 0) return;
      const next = cursor[layout.axis] + (event.deltaY > 0 ? 1 : -1);
      cursor[layout.axis] = Math.min(Math.max(next, 0), layout.count - 1);
      drawPlanes();
    }, { passive: false });
    panes.push(pane);
  }
  row.append(column);

  const shown = () => !column.hidden;
  const place = (line, fraction, horizontal) => {
    if (horizontal) line.style.top = `${fraction * 100}%`;
    else line.style.left = `${fraction * 100}%`;
  };

  function drawPlanes() {
    cursor[2] = state.z;
    mainCross.classList.toggle("hidden", !shown());
    place(mainV, (cursor[0] + 0.5) / width, false);
    place(mainH, (cursor[1] + 0.5) / height, true);
    if (!shown()) return;
    const mainOverlay = $("overlay-img");
    const mainDoubt = $("uncertainty-img");
    const overlayTemplate = viewer.mainOverlayUrl();
    for (const pane of panes) {
      const { layout } = pane;
      const index = cursor[layout.axis];
      const src = planeUrl(sliceUrl, layout.plane, index, viewer.windowQuery());
      if (!pane.image.src.endsWith(src)) pane.image.src = src;
      pane.overlay.hidden = !overlayTemplate;
      if (overlayTemplate) {
        const over = planeUrl(overlayTemplate, layout.plane, index, viewer.overlayQuery());
        if (!pane.overlay.src.endsWith(over)) pane.overlay.src = over;
      }
      if (mainOverlay) {
        pane.overlay.style.opacity = mainOverlay.style.opacity;
        pane.overlay.classList.toggle("hidden", mainOverlay.classList.contains("hidden"));
      }
      const doubting = mainDoubt && !mainDoubt.classList.contains("hidden");
      pane.doubt.classList.toggle("hidden", !doubting);
      if (doubting) {
        pane.doubt.style.opacity = mainDoubt.style.opacity;
        const heat = planeUrl(root.dataset.uncertaintyUrl, layout.plane, index, "");
        if (!pane.doubt.src.endsWith(heat)) pane.doubt.src = heat;
      }
      const col = cursor[layout.column];
      const r = cursor[layout.row];
      place(pane.crossV, ((layout.column_flip ? layout.size[0] - 1 - col : col) + 0.5) / layout.size[0], false);
      place(pane.crossH, ((layout.row_flip ? layout.size[1] - 1 - r : r) + 0.5) / layout.size[1], true);
      pane.box.dataset.index = String(index);
    }
  }

  // --- the crosshair tool and the layout switch ----------------------------------------------
  const moveCursor = (vx, vy) => {
    const index = voxelOf(vx, vy);
    if (!index) return;
    cursor[0] = index[0];
    cursor[1] = index[1];
    drawPlanes();
  };
  viewer.addTool("crosshair", { down: moveCursor, move: moveCursor });

  const layoutSwitch = el("div", "layout-switch");
  layoutSwitch.setAttribute("role", "radiogroup");
  layoutSwitch.setAttribute("aria-label", "layout");
  layoutSwitch.title = "one plane, or the three planes with a crosshair (key 3)";
  for (const [value, text] of [["1", "1 plane"], ["3", "3 planes"]]) {
    const label = el("label");
    const radio = el("input");
    radio.type = "radio";
    radio.name = "layout";
    radio.value = value;
    radio.checked = value === "1";
    radio.addEventListener("change", () => setLayout(value));
    label.append(radio, ` ${text}`);
    layoutSwitch.append(label);
  }
  const tools = document.querySelector(".controls .tools");
  if (tools) tools.before(layoutSwitch);

  function setLayout(value) {
    column.hidden = value !== "3";
    row.classList.toggle("three-planes", value === "3");
    root.dataset.layout = value;
    for (const r of layoutSwitch.querySelectorAll("input")) r.checked = r.value === value;
    drawPlanes();
  }
  viewer.addKey("3", () => setLayout(shown() ? "1" : "3"), "One plane / three planes");
  // the crosshair links the planes: choosing it in one plane opens the three
  const crosshairRadio = document.querySelector("input[name=tool][value=crosshair]");
  const chooseCrosshair = () => {
    if (!crosshairRadio) return;
    crosshairRadio.checked = true;
    crosshairRadio.dispatchEvent(new Event("change", { bubbles: true }));
  };
  document.addEventListener("change", (event) => {
    if (event.target === crosshairRadio && crosshairRadio.checked && !shown()) setLayout("3");
  });
  if (crosshairRadio) {
    viewer.addKey("c", chooseCrosshair, "Crosshair tool: click or drag to move the three planes");
    viewer.addKey("C", chooseCrosshair);  // with Caps Lock
  }

  // the overlay's opacity and visibility are set by viewer.js on the main image: copy them
  const controls = document.querySelector(".controls");
  if (controls) {
    controls.addEventListener("input", drawPlanes);
    controls.addEventListener("change", drawPlanes);
  }
  viewer.onRender(() => {
    showSlicePosition();
    drawPlanes();
    if (last) readVoxel([last[0], last[1], state.z]);  // scrolled under a still cursor
  });
  showSlicePosition();
  if (/layout=3/.test(window.location.hash)) setLayout("3");
  else drawPlanes();
})();
