// Keeps the jobs table current by polling GET /api/jobs (no page reloads).
"use strict";
(function () {
  const table = document.getElementById("jobs");
  if (!table) return;
  const body = table.tBodies[0];
  const empty = document.getElementById("no-jobs");
  const url = table.dataset.url;
  const every = Number(table.dataset.pollMs) || 2000;

  function cell(row, text, className) {
    const td = row.insertCell();
    if (className) td.className = className;
    if (text !== undefined) td.textContent = text;
    return td;
  }

  function rowFor(job) {
    const row = document.createElement("tr");
    row.dataset.id = String(job.id);
    const link = document.createElement("a");
    link.href = `${table.dataset.jobBase}${job.id}`;
    link.textContent = String(job.id);
    cell(row).append(link);
    cell(row, job.kind);
    const state = document.createElement("span");
    state.className = `state state-${job.state}`;
    state.textContent = job.state;
    cell(row).append(state);
    const bar = document.createElement("progress");
    bar.max = 1;
    bar.value = job.progress;
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = ` ${Math.round(job.progress * 100)}%`;
    const eta = document.createElement("span");
    eta.className = "eta";
    eta.textContent = job.eta || ""; // a running job's time left, from its progress
    cell(row).append(bar, pct, " ", eta);
    cell(row, job.message, "message");
    if ("created_by" in job) cell(row, job.created_by); // only operators see owners
    cell(row, (job.created_at || "").slice(0, 16).replace("T", " "));
    return row;
  }

  async function poll() {
    if (!document.hidden) {
      try {
        const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
        if (response.status === 401) { window.location.reload(); return; }
        if (response.ok) {
          const data = await response.json();
          body.replaceChildren(...data.jobs.map(rowFor));
          empty.hidden = data.jobs.length > 0;
        }
      } catch (err) {
        // offline for a moment: keep the last rows and try again
      }
    }
    window.setTimeout(poll, every);
  }
  window.setTimeout(poll, every);
})();
