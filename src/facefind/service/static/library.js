// Library page: start an index job on a server folder, show its progress live, cancel it.
(function () {
  "use strict";
  const form = document.getElementById("job-form");
  if (!form) return;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const path = document.getElementById("job-path");
  const cancel = document.getElementById("job-cancel");
  const panel = document.getElementById("job");
  const bar = document.getElementById("job-bar");
  const text = document.getElementById("job-status");
  let jobId = null;

  function show(job) {
    panel.hidden = false;
    panel.dataset.status = job.status;
    const total = job.total_files;
    bar.max = Math.max(total || 0, 1);
    bar.value = total === null ? 0 : (job.status === "running" ? job.files_done : bar.max);
    let line = `${job.status}: ${job.files_done}/${total === null ? "?" : total} files, ` +
      `${job.files_per_s} files/s, ${job.faces} faces, ${job.no_face} without a face, ${job.failed} failed`;
    if (job.footage) line += ` (${job.footage})`;
    if (job.error) line += ` - ${job.error}`;
    text.textContent = line;
    cancel.hidden = job.status !== "running";
  }

  async function poll() {
    const response = await fetch(`/api/v1/jobs/${jobId}`);
    const job = await response.json();
    show(job);
    if (job.status === "running") setTimeout(poll, 400);
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const response = await fetch("/api/v1/jobs", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify({ paths: [path.value] }),
    });
    const body = await response.json();
    if (!response.ok) {
      panel.hidden = false;
      panel.dataset.status = "refused";
      text.textContent = body.detail;
      return;
    }
    jobId = body.job_id;
    show(body);
    poll();
  });

  cancel.addEventListener("click", () => fetch(`/api/v1/jobs/${jobId}/cancel`, { method: "POST", headers: { "X-CSRF-Token": csrf } }));

  if (panel.dataset.runningJob) {
    jobId = panel.dataset.runningJob;
    poll();
  }
})();
