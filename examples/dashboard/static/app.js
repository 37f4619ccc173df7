// @ts-check
// The dashboard page: every panel on one stream of the multi-topic route /sse, through the
// framework's typed client (served at /sse-client.js), no build step. Type-checked (`tsc
// --checkJs`, the dashboard's tests) against the event contract generated from the server's
// Rust types: each handler's payload is typed from ../contract/events.d.ts.
import { subscribe } from "./sse-client.js";

/** @typedef {import("../contract/events").Events} Events */
/** @typedef {import("./sse-client.js").Subscription<Events>} Subscription */
/** @typedef {import("./sse-client.js").Stream} Stream */
/** @typedef {{ max?: number, format: (v: number) => string }} ChartOptions */

const HISTORY = 120; // samples kept for the charts
const dashboard = (/** @type {any} */ (window).dashboard = {
  samples: [], // {at, arrived, cpu, memory, rx, tx}
  sampledBy: null, // pid of the dashboard instance that took the last system sample
  processSamples: 0,
  processPid: null, // pid of the process the panel shows
  runtime: [], // {delivered, published, streams} per second, for the runtime chart
  lastRuntime: null, // the newest runtime sample
  sessions: 0,
  alarms: 0,
  reconnects: 0,
  status: "connecting",
  states: [], // the stream's states, {state, status?, reason?, retryInMs?}, the latest 50
});

/** @returns {any} the element with `id` (any: inputs, forms and canvases alike) */
const $ = (/** @type {string} */ id) => document.getElementById(id);

// Tells anyone watching the page (the browser tests) that its state changed.
const updated = () => window.dispatchEvent(new Event("dashboard:update"));

function setStatus(status) {
  dashboard.status = status;
  $("status").textContent = status;
  $("connection").className = "connection " + status;
  updated();
}

function formatRate(bytesPerSecond) {
  const units = ["B/s", "KiB/s", "MiB/s", "GiB/s"];
  let value = bytesPerSecond, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit++; }
  return value.toFixed(value < 10 && unit > 0 ? 1 : 0) + " " + units[unit];
}

/**
 * @param {HTMLCanvasElement} canvas
 * @param {{ values: (number | null)[], color: string }[]} series
 * @param {ChartOptions} options
 */
function drawChart(canvas, series, { max, format }) {
  // Drawn at the size it is shown (and the screen's pixel ratio), so that its labels stay
  // readable in a narrow window instead of being scaled down with the picture.
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = Number(canvas.dataset.height);
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  const pad = { left: 44, right: 8, top: 10, bottom: 18 };
  ctx.clearRect(0, 0, width, height);
  const top = max ?? Math.max(1, ...series.flatMap((s) => s.values)) * 1.15;
  ctx.font = "11px system-ui"; ctx.fillStyle = "#8b98a5"; ctx.strokeStyle = "#263241"; ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = pad.top + ((height - pad.top - pad.bottom) * i) / 4;
    ctx.beginPath(); ctx.moveTo(pad.left, y); ctx.lineTo(width - pad.right, y); ctx.stroke();
    ctx.fillText(format(top * (1 - i / 4)), 4, y + 4);
  }
  ctx.fillText(`last ${HISTORY} s`, pad.left, height - 4);
  const x = (i) => pad.left + ((width - pad.left - pad.right) * i) / (HISTORY - 1);
  const y = (v) => pad.top + (height - pad.top - pad.bottom) * (1 - Math.min(v, top) / top);
  for (const { values, color } of series) {
    const offset = HISTORY - values.length;
    ctx.strokeStyle = color; ctx.lineWidth = 2; ctx.beginPath();
    // A null (no reading) breaks the line instead of dropping it to zero.
    let pen = false;
    values.forEach((v, i) => {
      if (v === null) { pen = false; return; }
      (pen ? ctx.lineTo : ctx.moveTo).call(ctx, x(i + offset), y(v));
      pen = true;
    });
    ctx.stroke();
    if (values.length && values[values.length - 1] !== null) {
      ctx.fillStyle = color; ctx.beginPath();
      ctx.arc(x(values.length - 1 + offset), y(values[values.length - 1]), 3, 0, 2 * Math.PI); ctx.fill();
    }
  }
}

const TOPICS = { system: "/sse/system", runtime: "/sse/runtime", alarms: "/sse/alarms" };
let processTopic = null; // "/sse/process?pid=N", once the pid is known and valid
let pidExplicit = false; // the page's URL names the pid (else it follows the server's own)

function render() {
  const s = dashboard.samples;
  const canvas = $("usage-chart");
  drawChart(canvas, [
    { values: s.map((p) => p.cpu), color: "#4aa8ff" },
    { values: s.map((p) => p.memory), color: "#b48cff" },
  ], { max: 100, format: (v) => v.toFixed(0) + "%" });
  canvas.dataset.points = String(s.length);
  drawChart($("net-chart"), [
    { values: s.map((p) => p.rx), color: "#3ecf8e" },
    { values: s.map((p) => p.tx), color: "#f5a524" },
  ], { format: (v) => formatRate(v).replace("/s", "") });
}

// The topics of the one stream, each named by the URL of its own route.
function topics() {
  return [TOPICS.system, TOPICS.runtime, TOPICS.alarms, processTopic].filter((t) => t !== null);
}

// System: one shared topic and poller for every open page.
function onSystem(/** @type {Events["/sse/system"]["message"]} */ data) {
  setStatus("live");
  // Right after an idle gap the server sends no rates (null), rather than the gap's average.
  dashboard.samples.push({ at: data.at, arrived: Date.now(), cpu: data.cpu, memory: data.memory, rx: data.net_rx, tx: data.net_tx });
  if (dashboard.samples.length > HISTORY) dashboard.samples.shift();
  $("cpu-value").textContent = data.cpu === null ? "–" : data.cpu.toFixed(1);
  $("memory-value").textContent = data.memory.toFixed(1);
  $("memory-detail").textContent = `${data.memory_used_mib} / ${data.memory_total_mib} MiB`;
  $("load-value").textContent = data.load.map((l) => l.toFixed(2)).join(" / ");
  $("rx-value").textContent = data.net_rx === null ? "–" : formatRate(data.net_rx);
  $("tx-value").textContent = data.net_tx === null ? "–" : formatRate(data.net_tx);
  $("sample-count").textContent = String(Number($("sample-count").textContent) + 1);
  $("sampled-by").textContent = String(data.sampled_by);
  dashboard.sampledBy = data.sampled_by;
  render();
  updated();
}

// Runtime: the framework's own figures, from the same recorder as /metrics.
function tally(id, counts) {
  const list = $(id);
  list.replaceChildren();
  const entries = Object.entries(counts).filter(([, n]) => n > 0);
  if (!entries.length) { const none = document.createElement("dt"); none.className = "muted"; none.textContent = "none yet"; list.append(none); }
  for (const [name, count] of entries) {
    const dt = document.createElement("dt"); dt.textContent = name;
    const dd = document.createElement("dd"); dd.textContent = String(count);
    list.append(dt, dd);
  }
}

function onRuntime(/** @type {Events["/sse/runtime"]["message"]} */ data) {
  dashboard.lastRuntime = data;
  dashboard.runtime.push({ delivered: data.delivered_per_s ?? 0, published: data.published_per_s ?? 0, streams: data.streams });
  if (dashboard.runtime.length > HISTORY) dashboard.runtime.shift();
  const rate = (v) => (v === null || v === undefined ? "–" : v.toFixed(v < 10 ? 1 : 0));
  $("runtime-pid").textContent = String(data.sampled_by);
  $("runtime-streams").textContent = String(data.streams);
  $("runtime-topics").textContent = String(data.topics);
  $("runtime-pollers").textContent = String(data.pollers);
  $("runtime-published").textContent = rate(data.published_per_s);
  $("runtime-delivered").textContent = rate(data.delivered_per_s);
  tally("runtime-disconnects", data.disconnects);
  tally("runtime-resumes", data.resumes);
  tally("runtime-refusals", data.refusals);
  renderRuntime();
  updated();
}

function renderRuntime() {
  const r = dashboard.runtime;
  drawChart($("runtime-chart"), [
    { values: r.map((p) => p.delivered), color: "#3ecf8e" },
    { values: r.map((p) => p.published), color: "#4aa8ff" },
    { values: r.map((p) => p.streams), color: "#f5a524" },
  ], { format: (v) => v.toFixed(v < 10 ? 1 : 0) });
}

// Process: the topic is the URL (path + query), so each pid gets its own poller. The route
// needs a session (a cookie): the page opens one before the stream, and when the session
// expires the server ends the stream and refuses the reconnect with a 401; the client stops
// (asking again with the same credentials cannot help), and the page opens a new session and
// subscribes again from where the stream was.
function onProcess(/** @type {Events["/sse/process"]["message"]} */ data) {
  $("process-error").hidden = true;
  dashboard.processSamples++;
  dashboard.processPid = data.pid;
  $("process-name").textContent = data.name;
  $("process-state").textContent = data.state;
  $("process-cpu").textContent = data.cpu === null ? "–" : data.cpu.toFixed(1) + " %";
  $("process-rss").textContent = data.rss_mib.toFixed(1) + " MiB";
  $("process-threads").textContent = String(data.threads);
  updated();
}

// A failed poll is its own event (`poll-error`), {apiVersion, statusCode, message}.
function onPollError(/** @type {Events["/sse/system"]["poll-error"]} */ error, /** @type {MessageEvent} */ event) {
  console.warn("poll error", event.type, error);
}

function onProcessError(/** @type {Events["/sse/process"]["poll-error"]} */ data) {
  const error = $("process-error");
  error.hidden = false;
  error.textContent = `${data.statusCode}: ${data.message}`;
}

function processError(message) {
  const error = $("process-error");
  error.hidden = false;
  error.textContent = message;
  for (const id of ["process-name", "process-state", "process-cpu", "process-rss", "process-threads"]) $(id).textContent = "–";
}

async function openSession() {
  const response = await fetch("/api/session", { method: "POST" });
  if (!response.ok) throw new Error(`no session: ${response.status}`);
  dashboard.sessions++;
  updated();
}

// The server's own pid, unless the page's URL names one: after a server restart the page
// follows the new process instead of watching the old, gone one.
async function choosePid() {
  const asked = new URLSearchParams(location.search).get("pid");
  if (asked !== null) {
    pidExplicit = true;
    $("pid-input").value = asked;
    if (!/^[1-9][0-9]{0,9}$/.test(asked)) {
      processError(`?pid=${asked} is not a process id: give a whole number above 0.`);
      return null;
    }
    return asked;
  }
  return String((await (await fetch("/api/info")).json()).pid);
}

function setProcess(pid) {
  processTopic = pid === null ? null : `/sse/process?pid=${pid}`;
  if (pid !== null) $("pid-input").value = pid;
  $("process-topic").textContent = processTopic ?? "–";
}

// The page's subscriptions: every panel's handlers, typed per route and event.
function subscriptions() {
  /** @type {Subscription[]} */
  const all = [
    { route: "/sse/system", on: { message: onSystem, "poll-error": onPollError } },
    { route: "/sse/runtime", on: { message: onRuntime, "poll-error": onPollError } },
    { route: "/sse/alarms", on: { alarm: onAlarm } },
  ];
  if (processTopic) {
    all.push({ route: "/sse/process", topic: processTopic, on: { message: onProcess, "poll-error": onProcessError } });
  }
  return all;
}

/** @type {Stream | null} */
let stream = null;

// Opens the stream; `from` resumes it (the same topics' last id, after a new session).
async function connect(from = "") {
  if (processTopic) await openSession();
  const query = new URLSearchParams(topics().map((t) => ["topic", t]));
  $("stream-url").textContent = decodeURIComponent("/sse?" + query);
  /** @type {Stream} */
  const current = (stream = subscribe("/sse", subscriptions(), {
    lastEventId: from,
    onReset: (topic, reset) => console.info("reset", topic, reset.reason),
    onState: (state, detail) => {
      dashboard.states.push({ state, ...detail });
      if (dashboard.states.length > 50) dashboard.states.shift();
      if (stream !== current) return;
      if (state === "live") {
        setStatus("live");
        void follow(current);
      } else if (state === "reconnecting") {
        // The browser reconnects by itself after a cut (and sends Last-Event-ID, from which
        // the server resumes every topic); after a refusal or a proxy's 502 the client opens
        // the stream again after a backoff.
        if (dashboard.status === "live") { dashboard.reconnects++; $("reconnects").textContent = dashboard.reconnects; }
        if (detail.status) {
          setStatus("refused");
          $("status").textContent = `refused: ${detail.status}${detail.reason ? " " + detail.reason : ""}`;
        } else {
          setStatus("reconnecting");
        }
      } else if (state === "closed" && (detail.status === 401 || detail.status === 403)) {
        // The session expired: a new one, and the same topics from where they were.
        stream = null;
        setTimeout(() => void connect(current.lastEventId), 500);
      } else if (state === "closed" && detail.status) {
        setStatus("refused");
        $("status").textContent = `refused: ${detail.status}`;
      }
    },
  }));
}

// After a server restart, the panel follows the new process (unless the page's URL names a
// pid): a new stream of the new topics (the others start live on it).
async function follow(/** @type {Stream} */ current) {
  if (pidExplicit) return;
  const pid = String((await (await fetch("/api/info")).json()).pid);
  if (processTopic !== `/sse/process?pid=${pid}` && stream === current) {
    stream = null;
    current.close();
    setProcess(pid);
    await connect();
  }
}

async function watch() {
  setProcess(await choosePid());
  $("process-form").onsubmit = (event) => {
    event.preventDefault();
    location.search = "?pid=" + encodeURIComponent($("pid-input").value);
  };
  await connect();
}

function onAlarm(/** @type {Events["/sse/alarms"]["alarm"]} */ alarm) {
  const list = $("alarms");
  list.querySelector(".empty")?.remove();
  const item = document.createElement("li");
  item.dataset.metric = alarm.metric;
  const time = new Date(alarm.at).toLocaleTimeString();
  item.textContent = `${time}  ${alarm.metric} ${alarm.value} above ${alarm.threshold}`;
  list.prepend(item);
  dashboard.alarms++;
  updated();
}

async function thresholds() {
  const form = $("threshold-form");
  const current = await (await fetch("/api/thresholds")).json();
  for (const key of ["cpu", "memory", "load"]) form.elements[key].value = current[key];
  form.onsubmit = async (event) => {
    event.preventDefault();
    const body = Object.fromEntries(["cpu", "memory", "load"].map((k) => [k, Number(form.elements[k].value)]));
    const response = await fetch("/api/thresholds", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    $("threshold-note").textContent = response.ok ? "Thresholds set." : `Refused: ${await response.text()}`;
  };
}

window.addEventListener("resize", () => { render(); renderRuntime(); });
watch();
thresholds();
render();
renderRuntime();
