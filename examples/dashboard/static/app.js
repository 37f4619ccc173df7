// The dashboard page: three EventSource subscriptions, no build step, no library.
"use strict";

const HISTORY = 120; // samples kept for the charts
const dashboard = (window.dashboard = {
  samples: [], // {at, arrived, cpu, memory, rx, tx}
  sampledBy: null, // pid of the dashboard instance that took the last system sample
  processSamples: 0,
  sessions: 0,
  alarms: 0,
  reconnects: 0,
  status: "connecting",
});

const $ = (id) => document.getElementById(id);

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

function drawChart(canvas, series, { max, format }) {
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
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
    values.forEach((v, i) => (i === 0 ? ctx.moveTo(x(i + offset), y(v)) : ctx.lineTo(x(i + offset), y(v))));
    ctx.stroke();
    if (values.length) {
      ctx.fillStyle = color; ctx.beginPath();
      ctx.arc(x(values.length - 1 + offset), y(values[values.length - 1]), 3, 0, 2 * Math.PI); ctx.fill();
    }
  }
}

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

// System: one shared topic and poller for every open page.
function watchSystem() {
  const source = new EventSource("/sse/system");
  source.onopen = () => setStatus("live");
  source.onerror = () => {
    // The browser reconnects by itself (after the server's retry hint) and sends Last-Event-ID.
    if (dashboard.status !== "reconnecting") { dashboard.reconnects++; $("reconnects").textContent = dashboard.reconnects; }
    setStatus("reconnecting");
  };
  source.onmessage = (event) => {
    const data = JSON.parse(event.data);
    if (data.statusCode) { console.warn("poll error", data); return; }
    setStatus("live");
    dashboard.samples.push({ at: data.at, arrived: Date.now(), cpu: data.cpu, memory: data.memory, rx: data.net_rx, tx: data.net_tx });
    if (dashboard.samples.length > HISTORY) dashboard.samples.shift();
    $("cpu-value").textContent = data.cpu.toFixed(1);
    $("memory-value").textContent = data.memory.toFixed(1);
    $("memory-detail").textContent = `${data.memory_used_mib} / ${data.memory_total_mib} MiB`;
    $("load-value").textContent = data.load.map((l) => l.toFixed(2)).join(" / ");
    $("rx-value").textContent = formatRate(data.net_rx);
    $("tx-value").textContent = formatRate(data.net_tx);
    $("sample-count").textContent = String(Number($("sample-count").textContent) + 1);
    $("sampled-by").textContent = String(data.sampled_by);
    dashboard.sampledBy = data.sampled_by;
    render();
    updated();
  };
}

// Process: the topic is the URL (path + query), so each pid gets its own poller. The route
// needs a session (a cookie): the page opens one, and when the session expires the server ends
// the stream and refuses the reconnect, EventSource gives up (CLOSED), and the page opens a new
// session and a new stream.
async function openSession() {
  const response = await fetch("/api/session", { method: "POST" });
  if (!response.ok) throw new Error(`no session: ${response.status}`);
  dashboard.sessions++;
}

async function watchProcess() {
  let pid = new URLSearchParams(location.search).get("pid");
  if (!pid) pid = String((await (await fetch("/api/info")).json()).pid);
  $("pid-input").value = pid;
  const url = `/sse/process?pid=${encodeURIComponent(pid)}`;
  $("process-topic").textContent = url;
  const open = async () => {
    await openSession();
    const source = new EventSource(url);
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) setTimeout(open, 500);
    };
    source.onmessage = (event) => {
      const data = JSON.parse(event.data);
      const error = $("process-error");
      if (data.statusCode) { error.hidden = false; error.textContent = `${data.statusCode}: ${data.message}`; return; }
      error.hidden = true;
      dashboard.processSamples++;
      $("process-name").textContent = data.name;
      $("process-state").textContent = data.state;
      $("process-cpu").textContent = data.cpu.toFixed(1) + " %";
      $("process-rss").textContent = data.rss_mib.toFixed(1) + " MiB";
      $("process-threads").textContent = String(data.threads);
      updated();
    };
  };
  await open();
  $("process-form").onsubmit = (event) => {
    event.preventDefault();
    location.search = "?pid=" + encodeURIComponent($("pid-input").value);
  };
}

function watchAlarms() {
  const source = new EventSource("/sse/alarms");
  source.addEventListener("alarm", (event) => {
    const alarm = JSON.parse(event.data);
    const list = $("alarms");
    list.querySelector(".empty")?.remove();
    const item = document.createElement("li");
    item.dataset.metric = alarm.metric;
    const time = new Date(alarm.at).toLocaleTimeString();
    item.textContent = `${time}  ${alarm.metric} ${alarm.value} above ${alarm.threshold}`;
    list.prepend(item);
    dashboard.alarms++;
    updated();
  });
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

watchSystem();
watchAlarms();
watchProcess();
thresholds();
render();
