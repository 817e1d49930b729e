// The fedmnist dashboard page: one WebSocket (/ws) keeps it up to date.
// The server sends a "snapshot" of the whole run on connect, then a "round" event
// per finished round, a "clients" event when a client connects or leaves, and a
// "status" event when the run ends (see /docs).
"use strict";

const RECONNECT_MS = 1000;

const state = {
  run: null,        // RunDetail of the run shown (null: no run yet).
  selected: "",     // Run id chosen in the list; "" follows the current run.
  socket: null,
};

const $ = (id) => document.getElementById(id);

function percent(value) {
  return value === null || value === undefined ? "–" : `${(100 * value).toFixed(1)}%`;
}

function number(value, digits = 3) {
  return value === null || value === undefined ? "–" : value.toFixed(digits);
}

// Charts. Animation is off: a live run redraws several times a second.
function lineChart(canvas, yTitle, datasets, yRange = {}) {
  return new Chart(canvas, {
    type: "line",
    data: { labels: [], datasets },
    options: {
      animation: false,
      maintainAspectRatio: false,
      interaction: { mode: "index", intersect: false },
      plugins: { legend: { labels: { boxHeight: 2 } } },
      scales: { x: { title: { display: true, text: "round" } }, y: { title: { display: true, text: yTitle }, ...yRange } },
      spanGaps: true,
    },
  });
}

const series = (label, color, dashed = false) => ({
  label, data: [], borderColor: color, backgroundColor: color, pointRadius: 2, borderWidth: 2,
  borderDash: dashed ? [6, 4] : [],
});

const charts = {
  accuracy: lineChart($("accuracy-chart"), "accuracy", [
    series("held-out (server)", "#2563eb"), series("clients (weighted)", "#16a34a", true),
  ], { suggestedMax: 1 }),
  loss: lineChart($("loss-chart"), "loss", [
    series("held-out (server)", "#2563eb"), series("clients (weighted)", "#16a34a", true),
  ]),
  clients: new Chart($("clients-chart"), {
    type: "bar",
    data: {
      labels: [],
      datasets: [
        { label: "trained", data: [], backgroundColor: "#93c5fd", stack: "clients" },
        { label: "failed", data: [], backgroundColor: "#f87171", stack: "clients" },
      ],
    },
    options: {
      animation: false,
      maintainAspectRatio: false,
      scales: { x: { stacked: true, title: { display: true, text: "round" } }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } },
    },
  }),
};

// The charts start at round 0 (the starting model) when the server evaluated it.
function drawCharts(run) {
  const rounds = run ? run.rounds : [];
  const initial = run && run.initial ? [{ round: 0, accuracy_centralized: run.initial.accuracy, loss_centralized: run.initial.loss }] : [];
  const points = [...initial, ...rounds];
  const labels = points.map((r) => r.round);
  for (const [chart, keys] of [[charts.accuracy, ["accuracy_centralized", "accuracy_distributed"]],
                               [charts.loss, ["loss_centralized", "loss_distributed"]]]) {
    chart.data.labels = labels;
    keys.forEach((key, i) => { chart.data.datasets[i].data = points.map((r) => r[key] ?? null); });
    chart.update();
  }
  charts.clients.data.labels = rounds.map((r) => r.round);
  charts.clients.data.datasets[0].data = rounds.map((r) => r.fit_results);
  charts.clients.data.datasets[1].data = rounds.map((r) => r.fit_failures + r.evaluate_failures);
  charts.clients.update();
}

function table(element, rows) {
  element.replaceChildren(...rows.map(([key, value]) => {
    const row = document.createElement("tr");
    for (const text of [key, value ?? "–"]) {
      const cell = document.createElement("td");
      cell.textContent = String(text);
      row.append(cell);
    }
    return row;
  }));
}

function drawSummary(run) {
  if (!run) {
    $("round").textContent = "–";
    $("status").textContent = "no run yet: start one with ./run.sh";
    return;
  }
  const rounds = run.rounds;
  const last = rounds.length ? rounds[rounds.length - 1] : null;
  $("round").textContent = `${run.rounds_done} / ${run.rounds_total}`;
  $("progress").max = run.rounds_total;
  $("progress").value = run.rounds_done;
  $("status").textContent = run.status === "waiting" ? `waiting for ${run.clients} clients` : run.status;
  $("status").className = `note status-${run.status}`;
  $("accuracy-centralized").textContent = percent(last && last.accuracy_centralized);
  $("accuracy-initial").textContent = run.initial ? `round 0: ${percent(run.initial.accuracy)}` : "";
  $("accuracy-distributed").textContent = percent(last && last.accuracy_distributed);
  $("loss-distributed").textContent = last ? `loss ${number(last.loss_distributed)}` : "";
  $("clients").textContent = `${run.connected_clients ?? "–"} / ${run.clients}`;
  const failed = rounds.reduce((sum, r) => sum + r.fit_failures + r.evaluate_failures, 0);
  $("failures").textContent = last
    ? `round ${last.round}: ${last.fit_results} trained, ${last.fit_failures + last.evaluate_failures} failed; ${failed} failures in all`
    : "waiting for the first round";
  $("failures").className = failed ? "note failed" : "note";
  const seconds = rounds.reduce((sum, r) => sum + (r.seconds || 0), 0);
  $("seconds").textContent = last ? `${number(seconds / rounds.length, 2)} s` : "–";
  const left = last && run.status === "running" ? (seconds / rounds.length) * (run.rounds_total - run.rounds_done) : null;
  $("time-left").textContent = last ? `per round; ${number(seconds, 1)} s in all${left !== null ? `, ~${left.toFixed(0)} s left` : ""}` : "";

  table($("run-table"), [
    ["id", run.id], ["status", run.status], ["data", run.data_source], ["strategy", run.strategy],
    ["model", run.model], ["partition", run.partition], ["clients", run.clients],
    ["started", run.started], ["finished", run.finished], ["last update", run.updated],
  ]);
  table($("config-table"), Object.entries(run.config).sort(([a], [b]) => a.localeCompare(b)));
  const failures = rounds.flatMap((r) => r.failure_reasons.map((reason) => `round ${r.round}: ${reason}`));
  $("failure-list").replaceChildren(...(failures.length ? failures : ["none"]).map((text) => {
    const item = document.createElement("li");
    item.textContent = text;
    if (!failures.length) item.className = "muted";
    return item;
  }));
  const query = `run=${encodeURIComponent(run.id)}`;
  $("model-json").href = `/api/model/latest?${query}`;
  $("model-keras").href = `/api/model/latest?format=keras&${query}`;
}

function draw() {
  drawSummary(state.run);
  drawCharts(state.run);
  document.body.dataset.roundsShown = state.run ? state.run.rounds.length : 0;
}

// Events from /ws.
function onEvent(event) {
  if (event.type === "snapshot") {
    state.run = event.run;
    refreshRunList();
  } else if (event.type === "round" && state.run && event.run_id === state.run.id) {
    state.run.rounds.push(event.record);
    state.run.rounds_done = state.run.rounds.length;
    state.run.status = event.status;
  } else if (event.type === "clients" && state.run && event.run_id === state.run.id) {
    state.run.connected_clients = event.connected_clients;
  } else if (event.type === "status" && state.run && event.run.id === state.run.id) {
    Object.assign(state.run, event.run);
    refreshRunList();
  } else if (event.type === "error") {
    console.warn("dashboard:", event.error);
    return;
  } else {
    return;
  }
  draw();
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const query = state.selected ? `?run=${encodeURIComponent(state.selected)}` : "";
  const socket = new WebSocket(`${scheme}://${location.host}/ws${query}`);
  state.socket = socket;
  socket.onopen = () => { $("connection").textContent = "live"; $("connection").className = "badge live"; };
  socket.onmessage = (message) => onEvent(JSON.parse(message.data));
  socket.onclose = () => {
    if (state.socket !== socket) return;
    $("connection").textContent = "disconnected, retrying…";
    $("connection").className = "badge lost";
    setTimeout(connect, RECONNECT_MS);
  };
}

async function refreshRunList() {
  let runs;
  try {
    runs = await (await fetch("/api/runs")).json();
  } catch (error) {
    return;  // The socket's reconnect reports a lost server.
  }
  const select = $("run-select");
  const options = runs.map((run) => {
    const option = document.createElement("option");
    option.value = run.id;
    option.textContent = `${run.id} (${run.status}, ${run.rounds_done}/${run.rounds_total})`;
    return option;
  });
  select.replaceChildren(select.options[0], ...options);
  select.value = state.selected;
}

$("run-select").addEventListener("change", (event) => {
  state.selected = event.target.value;
  if (state.socket && state.socket.readyState === WebSocket.OPEN) {
    state.socket.send(JSON.stringify({ type: "subscribe", run: state.selected || null }));
  }
});

window.fedmnistDashboard = { state, charts };  // For the browser test and for curious users.
draw();
connect();
