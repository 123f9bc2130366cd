// One job: polls its state, appends new log lines, and refreshes the training curves (charts.js).
"use strict";
(function () {
  const root = document.getElementById("job");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const every = Number(root.dataset.pollMs) || 2000;
  const FINAL = ["succeeded", "failed", "cancelled"];
  let logOffset = 0;

  const getJson = async (url) => {
    const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (response.status === 401) { window.location.reload(); throw new Error("logged out"); }
    if (!response.ok) throw new Error(String(response.status));
    return response.json();
  };

  // a training job's charts, drawn on the server: fetched again while the job runs
  let chartsHtml = null;
  async function pollCharts() {
    const container = $("job-charts");
    if (!container) return;
    const response = await fetch(container.dataset.url, { credentials: "same-origin" });
    if (!response.ok) return;
    const html = await response.text();
    if (html !== chartsHtml) window.radsegCharts.replace(container, html);
    chartsHtml = html;
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
      await pollCharts();
    } catch (err) {
      // offline for a moment: try again
    }
    if (!final) window.setTimeout(poll, every);
  }
  poll();
})();
