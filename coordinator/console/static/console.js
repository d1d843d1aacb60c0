// Hamanasu console: file loading into the spec textarea, job polling, charts (Chart.js).
"use strict";
(function () {
  const palette = ["#0b4f8a", "#a4161a", "#1b5e20", "#6a1b9a", "#e65100", "#37474f"];

  function readJson(id) {
    const el = document.getElementById(id);
    return el ? JSON.parse(el.textContent) : null;
  }

  // A .toml file chosen by the researcher goes into the textarea (nothing is sent yet).
  document.querySelectorAll("input[type=file][data-target]").forEach(function (input) {
    input.addEventListener("change", function () {
      const file = input.files && input.files[0];
      if (!file) return;
      file.text().then(function (text) { document.getElementById(input.dataset.target).value = text; });
    });
  });

  function barChart(canvasId, labels, datasets) {
    const canvas = document.getElementById(canvasId);
    if (!canvas || typeof Chart === "undefined") return null;
    return new Chart(canvas, {
      type: "bar",
      data: { labels: labels, datasets: datasets },
      options: { responsive: true, maintainAspectRatio: false, animation: false,
                 scales: { y: { beginAtZero: true } } },
    });
  }

  const budget = readJson("budget-data");
  if (budget) {
    barChart("budget-chart", budget.labels, [
      { label: budget.cap_label, data: budget.caps, backgroundColor: palette[0] },
      { label: budget.requested_label, data: budget.requested, backgroundColor: palette[4] },
    ]);
  }
  const eps = readJson("eps-data");
  if (eps) {
    barChart("eps-chart", eps.labels, [{ label: eps.label, data: eps.values, backgroundColor: palette[0] }]);
  }

  // A job page: poll the status, plot metrics round by round.
  const jobEl = document.getElementById("job");
  if (!jobEl) return;
  const jobId = jobEl.dataset.job;
  const terminal = new Set(["succeeded", "failed", "cancelled"]);
  const seen = new Map();  // round -> metrics
  const canvas = document.getElementById("metrics-chart");
  let chart = null;

  function draw() {
    if (typeof Chart === "undefined" || !canvas) return;
    const rounds = Array.from(seen.keys()).sort(function (a, b) { return a - b; });
    const names = new Set();
    rounds.forEach(function (r) { Object.keys(seen.get(r)).forEach(function (k) { names.add(k); }); });
    const datasets = Array.from(names).sort().map(function (name, i) {
      return { label: name, data: rounds.map(function (r) { const v = seen.get(r)[name]; return v === undefined ? null : v; }),
               borderColor: palette[i % palette.length], backgroundColor: palette[i % palette.length], tension: 0.2 };
    });
    if (!chart) {
      chart = new Chart(canvas, { type: "line", data: { labels: rounds, datasets: datasets },
        options: { responsive: true, maintainAspectRatio: false, animation: false,
                   scales: { x: { title: { display: true, text: canvas.dataset.xlabel || "round" } } } } });
    } else {
      chart.data.labels = rounds;
      chart.data.datasets = datasets;
      chart.update();
    }
    canvas.dataset.rounds = String(rounds.length);
  }

  function text(id, value) { const el = document.getElementById(id); if (el) el.textContent = value; }

  function tick() {
    fetch("/console/api/jobs/" + encodeURIComponent(jobId), { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error(String(r.status)); return r.json(); })
      .then(function (body) {
        const job = body.job;
        const state = document.getElementById("job-state");
        state.textContent = job.state;
        state.className = "state state-" + job.state;
        text("job-round", job.round); text("job-rounds", job.rounds_total); text("job-reason", job.reason);
        const bar = document.getElementById("job-progress");
        bar.max = job.rounds_total; bar.value = job.round;
        if (job.round > 0 && Object.keys(body.metrics).length) seen.set(job.round, body.metrics);
        body.history.forEach(function (h) { if (Object.keys(h.metrics).length) seen.set(h.round, h.metrics); });
        draw();
        const approvals = document.getElementById("approvals");
        approvals.replaceChildren.apply(approvals, job.approvals.map(function (a) {
          const tr = document.createElement("tr");
          [a.node, a.status, a.reasons.map(function (x) { return x.message; }).join("; ")].forEach(function (v) {
            const td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
          });
          return tr;
        }));
        const events = document.getElementById("events");
        events.replaceChildren.apply(events, body.events.map(function (e) {
          const li = document.createElement("li");
          li.textContent = e.at.slice(11, 19) + " " + e.state + " — " + e.reason;
          return li;
        }));
        document.getElementById("job-held").hidden = !job.held;
        if (job.has_result && !job.held) document.getElementById("downloads").hidden = false;
        if (!terminal.has(job.state)) setTimeout(tick, 500);
        else jobEl.dataset.done = job.state;
      })
      .catch(function () { setTimeout(tick, 2000); });
  }
  tick();
})();
