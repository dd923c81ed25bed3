// The Lifeline console's only script: confirmations before an action, and the live target table.
"use strict";
(function () {
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });

  function sparkPoints(values) {
    var top = Math.max.apply(null, values.concat([0])) || 1;
    var step = 240 / Math.max(1, values.length - 1);
    return values.map(function (v, i) {
      return (i * step).toFixed(1) + "," + (34 - (v / top) * 32).toFixed(1);
    }).join(" ");
  }

  function apply(data) {
    data.targets.forEach(function (t) {
      var row = document.querySelector('tr[data-target="' + CSS.escape(t.target) + '"]');
      if (!row) return;
      var circuit = row.querySelector('[data-field="circuit"]');
      if (circuit && circuit.textContent !== t.circuit) {
        circuit.textContent = t.circuit;
        circuit.className = "state state-" + t.state;
      }
      document.querySelectorAll('[data-chain-target="' + CSS.escape(t.target) + '"]').forEach(function (chip) {
        chip.className = "chip chip-" + t.shown;
        chip.title = t.target + ": " + t.shown.replace("_", "-");
      });
      ["override_text", "since_text", "why"].forEach(function (name) {
        var cell = row.querySelector('[data-field="' + name + '"]');
        if (cell && cell.textContent !== t[name]) cell.textContent = t[name];
      });
    });
    Object.keys(data.sparks).forEach(function (key) {
      var line = document.querySelector('[data-spark="' + key + '"]');
      if (line) line.setAttribute("points", sparkPoints(data.sparks[key]));
      var now = document.querySelector('[data-spark-now="' + key + '"]');
      var last = data.sparks[key][data.sparks[key].length - 1];
      if (now) now.textContent = key === "error_rate" ? Math.round(last * 100) + "%" : String(Math.round(last));
    });
  }

  function poll(url) {
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) apply(data); })
      .catch(function () {})
      .then(function () { setTimeout(function () { poll(url); }, 2000); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var live = document.querySelector("[data-live]");
    if (live) poll(live.getAttribute("data-live"));
  });
})();
