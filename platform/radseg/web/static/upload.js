// Uploads with a progress bar (XMLHttpRequest reports upload progress; fetch does not), then
// follows to the ingest job's page. Without JavaScript the form posts normally.
"use strict";
(function () {
  const form = document.getElementById("upload-form");
  if (!form) return;
  const bar = document.getElementById("upload-progress");
  const status = document.getElementById("upload-status");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const request = new XMLHttpRequest();
    request.open("POST", form.action);
    request.setRequestHeader("Accept", "application/json");
    request.responseType = "json";
    bar.hidden = false;
    bar.value = 0;
    status.textContent = "Uploading…";
    request.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) {
        bar.value = e.loaded / e.total;
        status.textContent = `Uploading… ${Math.round(100 * e.loaded / e.total)}%`;
      }
    });
    request.addEventListener("load", () => {
      const data = request.response || {};
      if (request.status === 202 && data.url) {
        bar.value = 1;
        status.textContent = `Uploaded; ingest job ${data.job_id} is queued.`;
        window.location.assign(data.url);
      } else {
        status.textContent = `Not uploaded: ${data.detail || request.statusText || request.status}`;
        status.className = "flash flash-error";
      }
    });
    request.addEventListener("error", () => { status.textContent = "The upload failed (network)."; });
    request.send(new FormData(form));
  });
})();
