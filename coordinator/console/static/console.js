// Hamanasu console: file loading into the spec textarea, job polling, charts (Chart.js), and
// the auditor's in-browser check of a ledger entry's inclusion proof (WebCrypto, RFC 9162).
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

  // Node admin: the budget per domain and period (spent, reserved, cap).
  const budget = readJson("budget-data");
  if (budget) {
    const colours = [palette[1], palette[4], palette[0]];
    barChart("budget-chart", budget.labels, budget.datasets.map(function (d, i) {
      return { label: d.label, data: d.data, backgroundColor: colours[i % colours.length] };
    }));
  }
  const eps = readJson("eps-data");
  if (eps) {
    barChart("eps-chart", eps.labels, [{ label: eps.label, data: eps.values, backgroundColor: palette[0] }]);
  }

  // Auditor: check an entry's inclusion proof here. The browser hashes the entry's bytes as an
  // RFC 9162 leaf (SHA-256 of 0x00 || bytes), follows the audit path (SHA-256 of 0x01 || left ||
  // right) to a root, compares it with the signed head's root, and checks the head's Ed25519
  // signature with the node's registered key. Nothing is taken on the server's word.
  const entriesTable = document.getElementById("ledger-entries");
  if (entriesTable) {
    const labels = readJson("proof-labels") || {};
    const fill = function (text, values) {
      return text.replace(/\{(\w+)\}/g, function (_, k) { return values[k] === undefined ? "" : values[k]; });
    };
    const hex = function (bytes) { return Array.from(bytes, function (b) { return b.toString(16).padStart(2, "0"); }).join(""); };
    const unhex = function (text) { return Uint8Array.from((text.match(/../g) || []).map(function (h) { return parseInt(h, 16); })); };
    const unb64 = function (text) { return Uint8Array.from(atob(text), function (c) { return c.charCodeAt(0); }); };
    const sha256 = async function () {
      const parts = Array.from(arguments);
      const out = new Uint8Array(parts.reduce(function (n, p) { return n + p.length; }, 0));
      let at = 0;
      parts.forEach(function (p) { out.set(p, at); at += p.length; });
      return new Uint8Array(await crypto.subtle.digest("SHA-256", out));
    };
    const LEAF = Uint8Array.of(0), NODE = Uint8Array.of(1);

    // RFC 9162 section 2.1.3.2: the root an inclusion proof leads to.
    const rootFromPath = async function (leaf, index, size, path) {
      if (!(index >= 0 && index < size)) throw new Error(labels.proof_malformed);
      let fn = index, sn = size - 1, r = leaf;
      for (const p of path) {
        if (sn === 0) throw new Error(labels.proof_malformed);
        if ((fn & 1) === 1 || fn === sn) {
          r = await sha256(NODE, p, r);
          if ((fn & 1) === 0) { while ((fn & 1) === 0 && fn !== 0) { fn >>= 1; sn >>= 1; } }
        } else {
          r = await sha256(NODE, r, p);
        }
        fn >>= 1; sn >>= 1;
      }
      if (sn !== 0) throw new Error(labels.proof_malformed);
      return r;
    };

    // The head's signature: "hamanasu-sth-v1\n" + RFC 8785 JSON of key_id, root_hash, timestamp,
    // tree_size (keys in that order; hex and ASCII text need no escaping).
    const checkSignature = async function (body) {
      const head = body.head;
      if (!body.public_key_pem) return "invalid";
      const der = unb64(body.public_key_pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""));
      if (hex(await sha256(der.slice(der.length - 32))) !== head.key_id) return "invalid";
      let key;
      try {
        key = await crypto.subtle.importKey("spki", der, { name: "Ed25519" }, false, ["verify"]);
      } catch (e) {
        return "unsupported";
      }
      const message = new TextEncoder().encode("hamanasu-sth-v1\n" + JSON.stringify({
        key_id: head.key_id, root_hash: head.root_hash, timestamp: body.head_timestamp_text, tree_size: head.tree_size,
      }));
      return (await crypto.subtle.verify({ name: "Ed25519" }, key, unb64(head.signature), message)) ? "valid" : "invalid";
    };

    const check = async function (node, index) {
      if (!window.crypto || !crypto.subtle) throw new Error(labels.no_crypto);
      const r = await fetch("/console/api/audit/nodes/" + encodeURIComponent(node) + "/ledger/" + index + "/proof",
                            { credentials: "same-origin", cache: "no-store" });
      const body = await r.json();
      if (!r.ok) throw new Error(body.detail || String(r.status));
      if (body.index !== index) throw new Error(labels.proof_wrong_entry);
      let leaf;
      if (body.data === null) {
        // a consent event: its content stays at the node; the path starts from its leaf
        leaf = unhex(body.leaf_hash);
      } else {
        const data = unb64(body.data);
        const entry = JSON.parse(new TextDecoder().decode(data));
        if (entry.index !== index) throw new Error(labels.proof_wrong_entry);
        leaf = await sha256(LEAF, data);
      }
      const root = await rootFromPath(leaf, index, body.head.tree_size, body.proof.map(unhex));
      if (hex(root) !== body.head.root_hash) throw new Error(labels.proof_wrong_root);
      const signature = await checkSignature(body);
      if (signature === "invalid") throw new Error(labels.sig_invalid);
      return fill(labels.proof_detail, { i: index, leaf: hex(leaf).slice(0, 16) + "…", n: body.head.tree_size,
                                         root: body.head.root_hash.slice(0, 16) + "…" }) +
             "; " + (signature === "valid" ? labels.sig_valid : labels.sig_unsupported);
    };

    entriesTable.addEventListener("click", function (event) {
      const button = event.target.closest("button.check-proof");
      if (!button) return;
      const index = Number(button.dataset.index);
      const out = document.getElementById("proof-" + index);
      out.className = "proof-result";
      out.textContent = labels.checking;
      button.disabled = true;
      check(entriesTable.dataset.node, index).then(function (detail) {
        out.className = "proof-result proof-ok";
        out.dataset.verified = "true";
        out.textContent = "✓ " + labels.proof_verified + ": " + detail;
      }).catch(function (error) {
        out.className = "proof-result proof-bad";
        out.dataset.verified = "false";
        out.textContent = "✗ " + labels.proof_failed + ": " + error.message;
      }).finally(function () { button.disabled = false; });
    });
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
        const downloads = document.getElementById("downloads");  // the owner's page only
        if (downloads && job.has_result && !job.held) downloads.hidden = false;
        if (!terminal.has(job.state)) setTimeout(tick, 500);
        else jobEl.dataset.done = job.state;
      })
      .catch(function () { setTimeout(tick, 2000); });
  }
  tick();
})();
