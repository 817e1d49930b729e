// The fedmnist dashboard page: one WebSocket (/ws/events) keeps it up to date.
// The server sends a "snapshot" of the whole run on connect, then a "round" event
// per finished round, a "clients" event when a client connects or leaves, and a
// "status" event when the run ends (see /docs).
"use strict";

const RECONNECT_MS = 1000;

const state = {
  run: null,        // RunDetail of the run shown (null: no run yet).
  loaded: false,    // Whether the first snapshot arrived (until then the page says "loading").
  selected: "",     // Run id chosen in the list; "" follows the current run.
  socket: null,
  compared: new Set(),  // Run ids ticked under "Compare runs".
};
// Matplotlib's tab10, as the PNGs in plots/ use it: client i of a legend and digit d have one colour everywhere.
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

const $ = (id) => document.getElementById(id);

function percent(value) {
  return value === null || value === undefined ? "–" : `${(100 * value).toFixed(1)}%`;
}

function number(value, digits = 3) {
  return value === null || value === undefined ? "–" : value.toFixed(digits);
}

// "local_epochs" -> "Local epochs": config keys as a person reads them.
function readable(key) {
  const words = key.replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

// Times arrive as UTC ISO 8601; show them in the reader's own time zone.
function localTime(iso) {
  return iso ? new Date(iso).toLocaleString() : null;
}

function duration(seconds) {
  if (seconds === null || !isFinite(seconds)) return "–";
  const minutes = Math.floor(seconds / 60);
  return minutes ? `${minutes} min ${Math.round(seconds % 60)} s` : `${seconds.toFixed(1)} s`;
}

// Round axes tick at 1, 2, 5, 10, 20, 50... rounds apart, at most about ten ticks; Chart.js's own
// skipping of category labels gives steps such as 0, 14, 28.
function roundStep(rounds) {
  for (const step of [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000]) if (rounds / step <= 10) return step;
  return 1000 * Math.ceil(rounds / 10000);
}

function roundAxis() {
  return {
    title: { display: true, text: "round" },
    ticks: {
      autoSkip: false, maxRotation: 0,
      callback(value) {
        const round = Number(this.getLabelForValue(value));
        return round % roundStep(Math.max(...this.chart.data.labels.map(Number), 1)) === 0 ? round : null;
      },
    },
  };
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
      scales: { x: roundAxis(), y: { title: { display: true, text: yTitle }, ...yRange } },
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
  clientAccuracy: lineChart($("client-accuracy-chart"), "validation accuracy", [], { suggestedMax: 1 }),
  labels: new Chart($("labels-chart"), {
    type: "bar",
    data: { labels: [], datasets: [] },
    options: {
      animation: false,
      maintainAspectRatio: false,
      plugins: { legend: { labels: { boxWidth: 10 } } },
      scales: { x: { stacked: true, title: { display: true, text: "client (partition id)" } },
                y: { stacked: true, beginAtZero: true, title: { display: true, text: "examples" } } },
    },
  }),
  compare: lineChart($("compare-chart"), "held-out accuracy", []),
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
      scales: { x: { ...roundAxis(), stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } },
    },
  }),
};

// Hovering a client's line makes it stand out from the others.
charts.clientAccuracy.options.onHover = (event, elements, chart) => {
  const hovered = elements.length ? elements[0].datasetIndex : null;
  chart.data.datasets.forEach((dataset, i) => { dataset.borderWidth = hovered === null ? 2 : i === hovered ? 4 : 1; });
  chart.update("none");
};
charts.clientAccuracy.options.interaction = { mode: "nearest", intersect: false };

// The y axis fits the rounds after the first: the jump from round 0 (about 10%) would squash the
// part that matters (85-95%) into the top fifth. Round 0 stays in the data, below the axis.
function fitAccuracyAxis(chart, values) {
  const later = values.filter((v) => v !== null && v !== undefined);
  chart.options.scales.y.min = later.length ? Math.max(0, Math.floor((Math.min(...later) - 0.02) * 50) / 50) : undefined;
}

function drawClientCharts(run) {
  const rounds = run ? run.rounds : [];
  // By partition id, as clients.png orders (and so colours) them: client 2 before client 10.
  const order = new Map(rounds.flatMap((r) => r.clients.map((c) => [c.name, c.partition_id ?? Infinity])));
  const names = [...order.keys()].sort((a, b) => order.get(a) - order.get(b) || a.localeCompare(b));
  charts.clientAccuracy.data.labels = rounds.map((r) => r.round);
  charts.clientAccuracy.data.datasets = names.map((name, i) => ({
    ...series(name, PALETTE[i % PALETTE.length]),
    data: rounds.map((r) => (r.clients.find((c) => c.name === name) || {}).accuracy ?? null),
  }));
  fitAccuracyAxis(charts.clientAccuracy, charts.clientAccuracy.data.datasets.flatMap((d) => d.data));
  charts.clientAccuracy.update();
  const histograms = (run && run.label_histograms) || [];
  charts.labels.data.labels = histograms.map((_, i) => String(i));
  charts.labels.data.datasets = [...Array(10).keys()].map((digit) => ({
    label: String(digit), data: histograms.map((row) => row[digit]), backgroundColor: PALETTE[digit], stack: "labels",
  }));
  charts.labels.update();
}

function drawConfusion(run) {
  const latest = run ? [...run.rounds].reverse().find((r) => r.confusion) : null;
  const table = $("confusion");
  if (!latest) {
    table.replaceChildren();
    $("confusion-caption").textContent = "Held-out confusion matrix: after the first round";
    return;
  }
  const matrix = latest.confusion;
  const largest = Math.max(...matrix.flat());
  const header = document.createElement("tr");
  header.append(cell("th", "true \\ predicted"), ...matrix.map((_, digit) => cell("th", digit)));
  const rows = matrix.map((counts, truth) => {
    const row = document.createElement("tr");
    row.append(cell("th", truth), ...counts.map((count, predicted) => {
      const td = cell("td", count || "");
      const strength = count / largest;
      td.style.background = truth === predicted ? `rgba(37, 99, 235, ${strength})` : `rgba(220, 38, 38, ${Math.min(1, 4 * strength)})`;
      if (strength > 0.5) td.style.color = "white";
      return td;
    }));
    return row;
  });
  table.replaceChildren(header, ...rows);
  $("confusion-caption").textContent = `Held-out confusion matrix after round ${latest.round} (true digit by predicted digit)`;
}

// The latest round's updates side by side: an in-bound attacker stands out here (docs/robustness.md):
// pointing away from the others (cosine below 0), or discarded or clipped by a robust rule.
function drawUpdates(run) {
  const latest = run ? [...run.rounds].reverse().find((r) => r.clients.some((c) => c.update_norm != null)) : null;
  const table = $("updates");
  if (!latest) {
    table.replaceChildren();
    $("updates-caption").textContent = "Each client's update against the round's others: after the first round";
    return;
  }
  const number = (value) => (value == null ? "" : value.toFixed(3));
  const header = document.createElement("tr");
  header.append(...["client", "length", "distance to median", "cosine to median", "defence"].map((t) => cell("th", t)));
  const rows = latest.clients.filter((c) => c.update_norm != null).map((c) => {
    const row = document.createElement("tr");
    row.append(cell("th", c.name), cell("td", number(c.update_norm)), cell("td", number(c.update_distance_to_median)),
      cell("td", number(c.update_cosine_to_median)), cell("td", c.defence ?? ""));
    if (c.update_cosine_to_median < 0 || (c.defence && c.defence !== "kept")) row.className = "suspect";
    return row;
  });
  table.replaceChildren(header, ...rows);
  const backdoor = latest.backdoor_success == null ? "" : `; backdoor success ${(100 * latest.backdoor_success).toFixed(1)}%`;
  $("updates-caption").textContent = `Each client's update in round ${latest.round} against the others${backdoor}`;
}

// The latest round's worst mistakes (history/mistakes_N.json, written by the server after each round).
let mistakesShown = null;
async function drawMistakes(run) {
  const name = run && (run.files || []).find((file) => /^history\/mistakes_\d+\.json$/.test(file));
  const key = name ? `${run.id}:${run.rounds_done}` : null;
  if (key === mistakesShown) return;
  mistakesShown = key;
  if (!name) {
    $("mistakes").replaceChildren();
    return;
  }
  let latest;
  try {
    latest = await (await fetch(`/api/file?run=${encodeURIComponent(run.id)}&name=${encodeURIComponent(name)}`)).json();
  } catch (error) {
    mistakesShown = null;  // Try again with the next event.
    return;
  }
  $("mistakes").replaceChildren(...latest.mistakes.slice(0, 16).map((mistake) => {
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = 28;
    const image = canvas.getContext("2d").createImageData(28, 28);
    mistake.pixels.forEach((value, i) => {
      image.data.set([255 - value, 255 - value, 255 - value, 255], 4 * i);  // Dark ink on white.
    });
    canvas.getContext("2d").putImageData(image, 0, 0);
    const box = document.createElement("div");
    // Rounded down, as mistakes.png does: only a certain prediction reads 100%.
    box.append(canvas, `${mistake.true} as ${mistake.predicted}, ${Math.floor(100 * mistake.confidence)}%`);
    return box;
  }));
  $("mistakes-caption").textContent = `Held-out digits the model gets wrong after round ${latest.round} (true as predicted, surest first)`;
}

function cell(tag, text) {
  const element = document.createElement(tag);
  element.textContent = String(text);
  return element;
}

// The charts start at round 0 (the starting model) when the server evaluated it.
function drawCharts(run) {
  const rounds = run ? run.rounds : [];
  const initial = run && run.initial ? [{ round: 0, accuracy_centralized: run.initial.accuracy, loss_centralized: run.initial.loss }] : [];
  const points = [...initial, ...rounds];
  const labels = points.map((r) => r.round);
  for (const [chart, keys] of [[charts.accuracy, ["accuracy_centralized", "accuracy_distributed"]],
                               [charts.loss, ["loss_centralized", "loss_distributed"]]]) {
    chart.data.labels = labels;
    keys.forEach((key, i) => {
      chart.data.datasets[i].data = points.map((r) => (i === 1 && r.round > 0 && !accepted(r) ? null : r[key] ?? null));
    });
    if (chart === charts.accuracy) fitAccuracyAxis(chart, rounds.flatMap((r) => keys.map((key) => r[key])));
    chart.update();
  }
  drawClientCharts(run);
  drawConfusion(run);
  drawUpdates(run);
  drawMistakes(run);
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
    $("status").textContent = state.loaded ? "no run yet: start one with ./run.sh" : "loading…";
    return;
  }
  const rounds = run.rounds;
  const last = rounds.length ? rounds[rounds.length - 1] : null;
  $("round").textContent = `${run.rounds_done} / ${run.rounds_total}`;
  $("progress").max = run.rounds_total;
  $("progress").value = run.rounds_done;
  $("status").textContent = run.status === "waiting"
    ? `waiting for clients: ${run.connected_clients ?? 0} of ${run.clients} connected` : run.status;
  $("status").className = `note status-${run.status}`;
  $("accuracy-centralized").textContent = percent(last && last.accuracy_centralized);
  $("accuracy-initial").textContent = run.initial ? `round 0: ${percent(run.initial.accuracy)}` : "";
  $("weights-checksum").textContent = last && last.weights_checksum ? `model ${last.weights_checksum}` : "";
  const fresh = last && accepted(last);
  $("accuracy-distributed").textContent = percent(fresh ? last.accuracy_distributed : null);
  $("loss-distributed").textContent = !last ? "" : fresh ? `loss ${number(last.loss_distributed)}`
    : `round ${last.round} accepted no update: model unchanged`;
  $("clients").textContent = `${run.connected_clients ?? "–"} / ${run.clients}`;
  const failed = rounds.reduce((sum, r) => sum + r.fit_failures + r.evaluate_failures, 0);
  $("failures").textContent = !last ? "waiting for the first round"
    : `round ${last.round}: ${accepted(last) ? `${last.fit_results} trained` : "NO UPDATE ACCEPTED"}, `
      + `${last.fit_failures + last.evaluate_failures} failed; ${failed} failures in all`;
  $("failures").className = failed || (last && !accepted(last)) ? "note failed" : "note";
  // Wall time of the whole run (start-up and waiting for clients included), not only the rounds'.
  const seconds = rounds.reduce((sum, r) => sum + (r.seconds || 0), 0);
  const end = run.finished ? Date.parse(run.finished) : (run.status === "interrupted" ? Date.parse(run.updated) : Date.now());
  const wall = run.started ? (end - Date.parse(run.started)) / 1000 : null;
  $("seconds").textContent = duration(wall);
  const left = last && run.status === "running" ? (seconds / rounds.length) * (run.rounds_total - run.rounds_done) : null;
  $("time-left").textContent = last
    ? `${number(seconds / rounds.length, 2)} s per round${left !== null ? `, ~${left.toFixed(0)} s left` : ""}` : "";
  const best = rounds.reduce((top, r) => (r.accuracy_centralized !== null && (!top || r.accuracy_centralized > top.accuracy_centralized) ? r : top), null);
  $("best-accuracy").textContent = percent(best && best.accuracy_centralized);
  $("best-round").textContent = best ? `at round ${best.round} of ${run.rounds_total}` : "";
  // A differentially private run: epsilon spent so far, and what it was accounted with.
  const privacy = last && last.privacy;
  $("privacy-card").hidden = !privacy;
  if (privacy) {
    $("epsilon").textContent = `ε ${number(privacy.epsilon, 3)}`;
    $("privacy-note").textContent = `δ ${privacy.delta}, noise ${privacy.noise_multiplier}, clip ${privacy.clipping_norm} (${privacy.clipping} side)`
      + (privacy.max_epsilon ? `; budget ε ${privacy.max_epsilon}` : "");
  }

  table($("run-table"), [
    ["Name", run.name], ["Id", run.id], ["Status", run.status], ["Data", run.data_source], ["Strategy", run.strategy],
    ["Model", run.model], ["Partition", run.partition], ["Clients", run.clients],
    ["Started", localTime(run.started)], ["Finished", localTime(run.finished)], ["Last update", localTime(run.updated)],
  ]);
  // What shaped the run first; the rest (paths, ports, timeouts) folded, with the name and the
  // minimum of clients as they came to rather than "not given".
  const shaped = run.shaped_by || {};
  table($("shaped-table"), Object.entries(shaped).map(([key, value]) => [readable(key), value]));
  const every = { ...run.config, name: run.name ?? run.config.name, min_clients: shaped.min_clients ?? run.config.min_clients };
  table($("config-table"), Object.entries(every).sort(([a], [b]) => a.localeCompare(b)).map(([key, value]) => [readable(key), value]));
  $("config-summary").textContent = `every setting (${Object.keys(every).length})`;
  const files = run.files || [];
  $("file-list").replaceChildren(...(files.length ? files : [null]).map((name) => {
    const item = document.createElement("li");
    if (!name) {
      item.textContent = "none yet";
      item.className = "muted";
      return item;
    }
    const link = document.createElement("a");
    link.href = `/api/file?run=${encodeURIComponent(run.id)}&name=${encodeURIComponent(name)}`;
    link.textContent = name;
    item.append(link);
    return item;
  }));
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

// "live" only while the run shown can still change; a finished or stopped run is read from its files.
function drawConnection() {
  if (!state.socket || state.socket.readyState !== WebSocket.OPEN) return;
  const going = !state.run || ["running", "waiting"].includes(state.run.status);
  $("connection").textContent = going ? "live" : `${state.run.status}: from its files`;
  $("connection").className = going ? "badge live" : "badge";
}

// A round that accepted no update left the model as it was: the clients' numbers then are
// those of the round before, not news, so the charts leave a gap there.
const accepted = (round) => round.fit_results > 0;

function draw() {
  drawConnection();
  drawSummary(state.run);
  drawCharts(state.run);
  document.body.dataset.roundsShown = state.run ? state.run.rounds.length : 0;
}

// Events from /ws/events.
function onEvent(event) {
  if (event.type === "snapshot") {
    state.run = event.run;
    state.loaded = true;
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
  const socket = new WebSocket(`${scheme}://${location.host}/ws/events${query}`);
  state.socket = socket;
  socket.onopen = drawConnection;
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
    option.textContent = describeRun(run);
    return option;
  });
  select.replaceChildren(select.options[0], ...options);
  select.value = state.selected;
  $("compare-list").replaceChildren(...runs.map((run) => {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = run.id;
    box.checked = state.compared.has(run.id);
    box.addEventListener("change", () => {
      if (box.checked) state.compared.add(run.id); else state.compared.delete(run.id);
      drawComparison();
    });
    label.append(box, ` ${describeRun(run)}`);
    return label;
  }));
}

// A run as the lists show it: its id, its settings and how far it got.
function describeRun(run) {
  return `${run.name || run.id}: ${run.strategy}, ${run.partition}, ${run.model}, ${run.clients} clients (${run.status}, ${run.rounds_done}/${run.rounds_total})`;
}

// The held-out accuracy of every ticked run, one line each.
async function drawComparison() {
  const ids = [...state.compared];
  const runs = await Promise.all(ids.map(async (id) => {
    try { return await (await fetch(`/api/runs/${id}`)).json(); } catch (error) { return null; }
  }));
  const shown = runs.filter((run) => run && run.rounds);
  const longest = Math.max(0, ...shown.map((run) => run.rounds.length));
  charts.compare.data.labels = [...Array(longest).keys()].map((i) => i + 1);
  charts.compare.data.datasets = shown.map((run, i) => ({
    ...series(run.name || run.id, PALETTE[i % PALETTE.length]),
    data: run.rounds.map((r) => r.accuracy_centralized),
  }));
  fitAccuracyAxis(charts.compare, charts.compare.data.datasets.flatMap((d) => d.data));
  charts.compare.update();
  $("compare-chart").parentElement.hidden = !shown.length;  // No empty axes before a run is ticked.
  document.body.dataset.runsCompared = shown.length;
}

$("run-select").addEventListener("change", (event) => {
  state.selected = event.target.value;
  if (state.socket && state.socket.readyState === WebSocket.OPEN) {
    state.socket.send(JSON.stringify({ type: "subscribe", run: state.selected || null }));
  }
});

window.fedmnistDashboard = { state, charts, roundStep };  // For the browser test and for curious users.
draw();
$("compare-chart").parentElement.hidden = true;
connect();
