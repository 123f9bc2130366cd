// The prediction page: show the SEG type only for dicom-seg, offer a PACS only for DICOM formats,
// and follow the queued export jobs; when the last one ends, reload to list its export.
"use strict";
(function () {
  const root = document.getElementById("exports");
  if (!root) return;
  const every = Number(root.dataset.pollMs) || 2000;
  const FINAL = ["succeeded", "failed", "cancelled"];

  const format = document.getElementById("export-format");
  const segType = document.getElementById("seg-type-field");
  const pacs = document.getElementById("export-pacs");
  function syncForm() {
    if (!format) return;
    const chosen = format.options[format.selectedIndex];
    if (segType) segType.hidden = format.value !== "dicom-seg";
    if (pacs) {
      const dicom = chosen && chosen.dataset.dicom === "true";
      pacs.disabled = !dicom;
      if (!dicom) pacs.value = "";
    }
  }
  if (format) { format.addEventListener("change", syncForm); syncForm(); }

  const jobs = Array.from(root.querySelectorAll("[data-job-url]"));
  if (!jobs.length) return;
  async function poll() {
    let running = 0;
    for (const item of jobs) {
      if (item.dataset.done) continue;
      try {
        const response = await fetch(item.dataset.jobUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" });
        if (response.status === 401) { window.location.reload(); return; }
        if (!response.ok) { running += 1; continue; }
        const job = await response.json();
        const state = item.querySelector("[data-role=state]");
        state.textContent = job.state;
        state.className = "state state-" + job.state;
        item.querySelector("[data-role=progress]").value = job.progress;
        item.querySelector("[data-role=message]").textContent = job.message;
        if (FINAL.includes(job.state)) item.dataset.done = "1"; else running += 1;
      } catch (err) {
        running += 1;
      }
    }
    if (running) window.setTimeout(poll, every); else window.location.reload();
  }
  window.setTimeout(poll, every);
})();
