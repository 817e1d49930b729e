// A federated MNIST client in a browser tab: joins the run at /ws and trains with TensorFlow.js.
// The protocol (docs/dashboard.md, "Clients over WebSocket"; the API's /docs, Schemas): join -> welcome -> data ->
// (fit -> fit_result, evaluate -> evaluate_result) per round -> end.
// Query parameters: ?name=NAME and ?partition=ID (default: the lowest free place).
"use strict";

const PIXELS = 784;
const CLASSES = 10;
const params = new URLSearchParams(location.search);
const state = { model: null, train: null, validation: null, rounds: new Map(), done: false };
let socket = null;
let chart = null;

function $(id) { return document.getElementById(id); }
function percent(value) { return `${(100 * value).toFixed(1)}%`; }

function setStatus(text, stateName) {
  $("status").textContent = text;
  if (stateName) $("status").dataset.state = stateName;
}

// Rows arrive as base64 of count x 784 uint8 pixels and a list of labels.
function decodeRows(rows) {
  const bytes = Uint8Array.from(atob(rows.pixels), (c) => c.charCodeAt(0));
  const x = tf.tidy(() => tf.tensor2d(bytes, [rows.count, PIXELS], "float32").div(255));
  const y = tf.tidy(() => tf.oneHot(tf.tensor1d(rows.labels, "int32"), CLASSES).toFloat());
  return { x, y, count: rows.count };
}

// The dense network the weights' shapes describe: ReLU between layers, softmax at the end,
// trained with Adam on the cross-entropy as the Keras clients are.
function buildModel(tensors, learningRate) {
  const model = tf.sequential();
  for (let i = 0; i < tensors.length; i += 2) {
    const [inputs, units] = tensors[i].shape;
    const last = i + 2 === tensors.length;
    model.add(tf.layers.dense({ units, activation: last ? "softmax" : "relu", ...(i === 0 ? { inputShape: [inputs] } : {}) }));
  }
  model.compile({ optimizer: tf.train.adam(learningRate), loss: "categoricalCrossentropy", metrics: ["accuracy"] });
  return model;
}

function setWeights(tensors) {
  const weights = tensors.map((t) => tf.tensor(t.values, t.shape, "float32"));
  state.model.setWeights(weights);
  weights.forEach((w) => w.dispose());
}

async function weightsMessage() {
  return Promise.all(state.model.getWeights().map(async (w) => ({ shape: w.shape, dtype: "float32", values: await w.array() })));
}

function roundRow(round) {
  if (!state.rounds.has(round)) state.rounds.set(round, {});
  return state.rounds.get(round);
}

function showRounds() {
  const body = $("rounds").querySelector("tbody");
  body.replaceChildren();
  const fmt = (value, f) => (value === undefined ? "–" : f(value));
  for (const [round, r] of [...state.rounds.entries()].sort((a, b) => a[0] - b[0])) {
    const tr = document.createElement("tr");
    for (const text of [round, fmt(r.trainLoss, (v) => v.toFixed(3)), fmt(r.trainAccuracy, percent),
      fmt(r.valLoss, (v) => v.toFixed(3)), fmt(r.valAccuracy, percent), fmt(r.seconds, (v) => v.toFixed(2))]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    body.append(tr);
  }
  const rounds = [...state.rounds.keys()].sort((a, b) => a - b);
  chart.data.labels = rounds;
  chart.data.datasets[0].data = rounds.map((k) => state.rounds.get(k).trainAccuracy ?? null);
  chart.data.datasets[1].data = rounds.map((k) => state.rounds.get(k).valAccuracy ?? null);
  chart.update();
}

async function fit(message) {
  const config = message.config; // Complete: the dashboard's seat refuses a server whose config lacks a setting.
  if (state.model === null) {
    state.model = buildModel(message.weights, Number(config["learning-rate"]));
    $("model").textContent = `dense ${[message.weights[0].shape[0], ...message.weights.filter((_, i) => i % 2 === 0).map((t) => t.shape[1])].join("-")} (${config.model})`;
  }
  setStatus(`round ${message.round}: training…`, "training");
  setWeights(message.weights);
  const started = performance.now();
  const history = await state.model.fit(state.train.x, state.train.y, {
    epochs: Number(config["local-epochs"]), batchSize: Number(config["batch-size"]), shuffle: true,
  });
  const seconds = (performance.now() - started) / 1000;
  const loss = history.history.loss.at(-1);
  const accuracy = history.history.acc.at(-1);
  Object.assign(roundRow(message.round), { trainLoss: loss, trainAccuracy: accuracy, seconds });
  showRounds();
  send({ type: "fit_result", round: message.round, weights: await weightsMessage(), num_examples: state.train.count,
    metrics: { accuracy, loss } });
  setStatus(`round ${message.round}: sent my weights`, "waiting");
}

async function evaluate(message) {
  setWeights(message.weights);
  const [lossTensor, accuracyTensor] = state.model.evaluate(state.validation.x, state.validation.y);
  const loss = (await lossTensor.data())[0];
  const accuracy = (await accuracyTensor.data())[0];
  lossTensor.dispose(); accuracyTensor.dispose();
  Object.assign(roundRow(message.round), { valLoss: loss, valAccuracy: accuracy });
  $("round").textContent = `round ${message.round}`;
  $("accuracy").textContent = percent(accuracy);
  showRounds();
  send({ type: "evaluate_result", round: message.round, loss, num_examples: state.validation.count, metrics: { accuracy } });
}

function send(message) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
}

async function handle(message) {
  switch (message.type) {
    case "welcome":
      $("partition").textContent = message.partition;
      setStatus("joined; waiting for the data and the first round", "joined");
      break;
    case "data":
      state.train = decodeRows(message.train);
      state.validation = decodeRows(message.validation);
      $("partition").textContent = `${message.partition} of ${message.num_partitions}`;
      $("rows").textContent = `${message.train.count} training, ${message.validation.count} validation images (${message.scheme}, ${message.dataset})`;
      break;
    case "fit": await fit(message); break;
    case "evaluate": await evaluate(message); break;
    case "error": console.warn("server:", message.error); setStatus(`server says: ${message.error}`); break;
    case "end":
      state.done = true;
      $("round").textContent = message.finished ? "finished" : "stopped";
      setStatus(message.finished ? `run finished: ${message.reason}` : `left: ${message.reason}`,
        message.finished ? "finished" : "failed");
      break;
    default: break;
  }
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  // The run's join token, from this page's address (./run.sh prints /client?token=...).
  const token = params.get("token");
  socket = new WebSocket(`${scheme}://${location.host}/ws${token ? `?token=${encodeURIComponent(token)}` : ""}`);
  let queue = Promise.resolve();  // One message at a time: a fit finishes before the evaluate starts.
  socket.onopen = () => {
    $("connection").textContent = "connected";
    $("connection").className = "badge live";
    const partition = params.get("partition");
    send({ type: "join", name: params.get("name") || "browser tab", ...(partition !== null ? { partition: Number(partition) } : {}) });
  };
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    queue = queue.then(() => handle(message)).catch((error) => setStatus(`error: ${error}`, "failed"));
  };
  socket.onclose = (event) => {
    $("connection").textContent = "closed";
    $("connection").className = state.done ? "badge" : "badge lost";
    if (!state.done) setStatus(`disconnected (${event.code}${event.reason ? `: ${event.reason}` : ""})`, "failed");
  };
}

async function start() {
  // The CPU backend: exact float32 maths everywhere, and no WebGL start-up for a model this small.
  await tf.setBackend("cpu");
  chart = new Chart($("accuracy-chart"), {
    type: "line",
    data: { labels: [], datasets: [{ label: "training (local)", data: [] }, { label: "global model, my validation rows", data: [] }] },
    options: { animation: false, maintainAspectRatio: false, scales: { y: { min: 0, max: 1 } } },
  });
  $("leave").onclick = () => { state.done = true; setStatus("left the run", "left"); socket.close(); };
  connect();
}

start();
