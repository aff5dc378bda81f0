// The importd page: jobs, live progress, failed rows, downloads and uploads, through the
// HTTP/JSON API of the same port. No framework, nothing loaded from elsewhere.
"use strict";

const TOKEN_KEY = "importd.token";
const JOBS_PAGE_SIZE = 20;
const ENTRIES_PAGE_SIZE = 50;
const TERMINAL = new Set([
  "JOB_STATUS_SUCCEEDED",
  "JOB_STATUS_PARTIALLY_SUCCEEDED",
  "JOB_STATUS_FAILED",
  "JOB_STATUS_CANCELLED",
]);
const COUNTS = [
  ["processedRows", "Processed"],
  ["totalRows", "Total rows"],
  ["createdCount", "Created"],
  ["updatedCount", "Updated"],
  ["unchangedCount", "Unchanged"],
  ["skippedCount", "Skipped"],
  ["failedCount", "Failed"],
  ["deletedCount", "Deleted"],
  ["notProcessedCount", "Not processed"],
];

// The stages of a job whose file is still being received (it has no entries yet).
const UPLOAD_STAGES = new Set(["JOB_STAGE_RECEIVING", "JOB_STAGE_STAGING"]);

const $ = (id) => document.getElementById(id);

// ---- words -------------------------------------------------------------------------------

/** "JOB_STATUS_PARTIALLY_SUCCEEDED" -> "Partially succeeded". */
function words(value, prefix) {
  if (!value || value.endsWith("_UNSPECIFIED")) return "";
  const text = value.replace(prefix, "").toLowerCase().replaceAll("_", " ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function number(value) {
  return value === undefined || value === null ? "?" : Number(value).toLocaleString();
}

/** A size in decimal units, as importctl shows it: "41.2 MB". */
function bytes(value) {
  let size = Number(value || 0);
  const units = ["bytes", "kB", "MB", "GB", "TB"];
  let unit = 0;
  while (size >= 1000 && unit < units.length - 1) {
    size /= 1000;
    unit += 1;
  }
  return unit === 0 ? `${size} bytes` : `${size.toFixed(1)} ${units[unit]}`;
}

/** How far a job's upload got while its file is received ("" once it is received). */
function uploadText(job) {
  if (!UPLOAD_STAGES.has(job.stage)) return "";
  const total = job.totalRows === undefined ? "" : ` of ${number(job.totalRows)}`;
  return `${bytes(job.receivedBytes)} received · ${number(job.stagedRows)}${total} rows read`;
}

function when(value) {
  return value ? new Date(value).toLocaleString() : "";
}

/** Seconds of a protobuf Duration JSON ("12.5s") as "1 min 3 s". */
function duration(value) {
  if (!value) return "";
  const seconds = Math.round(parseFloat(value));
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${seconds % 60} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/** An element with attributes and children (text is always text, never markup). */
function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === undefined || value === null) continue;
    if (name === "class") element.className = value;
    else element.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

// ---- the API -----------------------------------------------------------------------------

class ApiError extends Error {
  constructor(httpStatus, status) {
    super(status.message || `HTTP ${httpStatus}`);
    this.httpStatus = httpStatus;
    this.status = status;
  }
}

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** A fetch of the API; JSON back, or an ApiError with the google.rpc.Status. */
async function api(path, { method = "GET", body, signal } = {}) {
  const response = await fetch(path, {
    method,
    signal,
    headers: { ...authHeaders(), ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  if (!response.ok) throw await apiError(response);
  return response.json();
}

async function apiError(response) {
  let status = { message: `HTTP ${response.status}` };
  try {
    status = await response.json();
  } catch (_) {
    // not JSON: keep the HTTP status
  }
  return new ApiError(response.status, status);
}

/** Follows a job's progress (Server-Sent Events) until its terminal event; resumes after a
 *  dropped stream. Calls onEvent(progressEvent) for each; stops when `signal` aborts. */
async function follow(jobId, onEvent, signal) {
  let pause = 1000;
  while (!signal.aborted) {
    try {
      const response = await fetch(`/v1/jobs/${encodeURIComponent(jobId)}:progress`, {
        headers: authHeaders(),
        signal,
      });
      if (!response.ok) throw await apiError(response);
      for await (const [kind, data] of events(response.body)) {
        if (kind === "error") throw new ApiError(503, data);
        onEvent(data);
        pause = 1000;
        if (data.terminal) return;
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError && error.httpStatus < 500) throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, pause));
    pause = Math.min(pause * 2, 10000);
  }
}

/** [kind, data] of each event of a text/event-stream body. */
async function* events(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replaceAll("\r\n", "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let kind = "";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) kind = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trim());
      }
      if (data.length) yield [kind, JSON.parse(data.join("\n"))];
    }
  }
}

// ---- the frame: views, notices, sign-in ---------------------------------------------------

let viewAbort = new AbortController(); // ends the streams of the view being left

function show(viewId) {
  for (const id of ["sign-in-view", "jobs-view", "job-view"]) $(id).hidden = id !== viewId;
  $("sign-out").hidden = !sessionStorage.getItem(TOKEN_KEY);
}

function notify(message) {
  const notice = $("notice");
  notice.textContent = message;
  notice.hidden = !message;
}

/** Shows an API failure; a 401 asks for a token. */
function fail(error) {
  if (error.name === "AbortError") return;
  if (error instanceof ApiError && error.httpStatus === 401) {
    signIn(error.message);
    return;
  }
  notify(error.message || String(error));
}

function signIn(message) {
  viewAbort.abort();
  show("sign-in-view");
  notify(message ? `Sign-in needed: ${message}` : "");
  $("token").value = "";
  $("token").focus();
}

$("sign-in-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  notify("");
  route(true);
});

$("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  signIn("");
});

// ---- the jobs list -----------------------------------------------------------------------

const jobsState = { tokens: [""], index: 0, types: null };

function jobsQuery() {
  const query = new URLSearchParams({ pageSize: JOBS_PAGE_SIZE });
  const status = $("status-filter").value;
  const search = $("search").value.trim();
  if (status) query.append("statuses", status);
  if (search) query.set("search", search);
  const token = jobsState.tokens[jobsState.index];
  if (token) query.set("pageToken", token);
  return query;
}

async function showJobs() {
  show("jobs-view");
  const signal = viewAbort.signal;
  await loadTypes();
  const page = await api(`/v1/jobs?${jobsQuery()}`, { signal });
  jobsState.tokens[jobsState.index + 1] = page.nextPageToken;
  $("jobs-prev").disabled = jobsState.index === 0;
  $("jobs-next").disabled = !page.nextPageToken;
  const rows = page.jobs.map((job) => jobRow(job, signal));
  $("jobs").querySelector("tbody").replaceChildren(...rows);
  $("jobs-empty").hidden = rows.length > 0;
}

function jobRow(job, signal) {
  const bar = h("progress", { max: 100, value: job.progressPercent, "aria-label": "Progress" });
  const done = h("span", { class: "numbers" });
  const status = h("span", { class: "status" });
  const failed = h("td", { "data-label": "Failed" });
  const paint = (current) => {
    bar.value = current.progressPercent;
    done.textContent =
      " " + (uploadText(current) || `${number(current.processedRows)} / ${number(current.totalRows)}`);
    const stage = UPLOAD_STAGES.has(current.stage) ? ` · ${words(current.stage, "JOB_STAGE_")}` : "";
    status.textContent = words(current.status, "JOB_STATUS_") + stage;
    status.dataset.status = current.status;
    failed.textContent = number(current.failedCount);
  };
  paint(job);
  if (!TERMINAL.has(job.status)) {
    follow(job.id, (event) => paint(event.job), signal).catch(fail);
  }
  const labels = Object.entries(job.labels || {}).map(([k, v]) => h("span", { class: "label" }, `${k}: ${v}`));
  return h(
    "tr",
    {},
    h("td", { "data-label": "File" }, h("a", { href: `#/jobs/${job.id}` }, job.fileName || job.id), ...labels),
    h("td", { "data-label": "Type" }, `${job.importType} · ${words(job.mode, "IMPORT_MODE_")}`),
    h("td", { "data-label": "Status" }, status, job.dryRun ? h("span", { class: "label" }, "dry run") : null),
    h("td", { "data-label": "Progress" }, h("span", {}, bar, done)),
    failed,
    h("td", { "data-label": "Created" }, when(job.createTime)),
  );
}

async function loadTypes() {
  if (jobsState.types) return;
  const { importTypes } = await api("/v1/importTypes");
  jobsState.types = importTypes;
  $("import-type").replaceChildren(
    ...importTypes.map((t) => h("option", { value: t.name }, t.description ? `${t.name} — ${t.description}` : t.name)),
  );
  fillModes();
}

function fillModes() {
  const type = (jobsState.types || []).find((t) => t.name === $("import-type").value);
  const modes = type ? type.modes : [];
  $("mode").replaceChildren(...modes.map((m) => h("option", { value: m }, words(m, "IMPORT_MODE_"))));
  if (modes.includes("IMPORT_MODE_UPSERT")) $("mode").value = "IMPORT_MODE_UPSERT";
}

$("import-type").addEventListener("change", fillModes);

$("filters").addEventListener("submit", (event) => {
  event.preventDefault();
  jobsState.tokens = [""];
  jobsState.index = 0;
  refreshJobs();
});

$("jobs-prev").addEventListener("click", () => {
  jobsState.index = Math.max(0, jobsState.index - 1);
  refreshJobs();
});

$("jobs-next").addEventListener("click", () => {
  jobsState.index += 1;
  refreshJobs();
});

function refreshJobs() {
  viewAbort.abort();
  viewAbort = new AbortController();
  showJobs().catch(fail);
}

// ---- starting an import ------------------------------------------------------------------

/** Uploads the file as the request body (streamed by the browser from disk), showing the
 *  bytes sent; then opens the job's page to watch it run. */
function startImport(file) {
  const query = new URLSearchParams({
    "spec.importType": $("import-type").value,
    "spec.mode": $("mode").value,
    "spec.fileName": file.name,
  });
  if ($("dry-run").checked) query.set("spec.dryRun", "true");
  const request = new XMLHttpRequest();
  request.open("POST", `/v1/jobs:import?${query}`);
  for (const [name, value] of Object.entries(authHeaders())) request.setRequestHeader(name, value);
  $("upload").hidden = false;
  $("upload-label").textContent = `Uploading ${file.name}`;
  $("upload-bar").value = 0;
  $("start").disabled = true;
  request.upload.addEventListener("progress", (event) => {
    if (event.lengthComputable) $("upload-bar").value = (100 * event.loaded) / event.total;
  });
  request.addEventListener("loadend", () => {
    $("start").disabled = false;
    $("upload").hidden = true;
    let answer = {};
    try {
      answer = JSON.parse(request.responseText);
    } catch (_) {
      answer = { message: `HTTP ${request.status}` };
    }
    if (request.status === 200) {
      notify("");
      $("file").value = "";
      location.hash = `#/jobs/${answer.id}`;
    } else {
      fail(new ApiError(request.status || 503, request.status ? answer : { message: "the upload did not reach the server" }));
    }
  });
  request.send(file);
}

$("start-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const file = $("file").files[0];
  if (file) startImport(file);
});

const drop = $("drop");
for (const name of ["dragenter", "dragover"]) {
  drop.addEventListener(name, (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
}
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  const file = event.dataTransfer.files[0];
  if (file) startImport(file);
});

// ---- one job -----------------------------------------------------------------------------

const jobState = { id: null, job: null, samples: [], tokens: [""], index: 0 };

async function showJob(jobId) {
  show("job-view");
  const signal = viewAbort.signal;
  if (jobState.id !== jobId) {
    Object.assign(jobState, { id: jobId, job: null, samples: [], tokens: [""], index: 0 });
    $("entry-status").value = "ENTRY_STATUS_FAILED";
    $("error-code").value = "";
    $("link").hidden = true;
    $("confirm-cancel").hidden = true;
  }
  paintJob(await api(`/v1/jobs/${encodeURIComponent(jobId)}`, { signal }));
  loadEntries().catch(fail);
  if (!TERMINAL.has(jobState.job.status)) {
    follow(jobId, (event) => paintJob(event.job, event), signal).catch(fail);
  }
}

function paintJob(job, event) {
  const ended = TERMINAL.has(job.status);
  const wasRunning = jobState.job && !TERMINAL.has(jobState.job.status);
  jobState.job = job;
  $("job-title").textContent = job.fileName || job.id;
  $("job-meta").textContent =
    `${job.importType} · ${words(job.mode, "IMPORT_MODE_")}${job.dryRun ? " · dry run" : ""}` +
    ` · created ${when(job.createTime)} · ${bytes(job.receivedBytes)} · id ${job.id}`;
  $("job-status").textContent = words(job.status, "JOB_STATUS_");
  $("job-status").dataset.status = job.status;
  $("job-stage").textContent = ended ? "" : words(job.stage, "JOB_STAGE_");
  $("job-bar").value = job.progressPercent;
  $("job-percent").textContent = `${Math.floor(job.progressPercent)}%`;
  const rate = job.rowsPerSecond ? `${Math.round(job.rowsPerSecond).toLocaleString()} rows/s` : "";
  const left = event && event.estimatedTimeRemaining ? ` · about ${duration(event.estimatedTimeRemaining)} left` : "";
  $("job-rate").textContent = ended ? `Ended ${when(job.endTime)}` : uploadText(job) || rate + left;
  $("job-error").hidden = !job.error;
  $("job-error").textContent = job.error ? job.error.message : "";
  $("counts").replaceChildren(
    ...COUNTS.map(([field, label]) => h("div", {}, h("dt", {}, label), h("dd", {}, number(job[field])))),
  );
  const summary = job.errorSummary || [];
  $("error-summary").hidden = summary.length === 0;
  $("error-summary").tBodies[0].replaceChildren(
    ...summary.map((counted) =>
      h("tr", {}, h("td", {}, counted.code), h("td", {}, counted.field || "(the row)"), h("td", {}, number(counted.count))),
    ),
  );
  $("cancel").hidden = ended;
  if (ended) $("confirm-cancel").hidden = true;
  if (event) {
    jobState.samples.push([Date.now(), job.rowsPerSecond || 0]);
    if (jobState.samples.length > 600) jobState.samples.shift();
  }
  drawChart();
  if (ended && wasRunning) loadEntries().catch(fail); // the rows' outcomes are final now
}

/** The throughput samples as a line over time (an SVG polyline). */
function drawChart() {
  const svg = $("chart");
  const samples = jobState.samples;
  const ns = "http://www.w3.org/2000/svg";
  const svgElement = (tag, attributes, text) => {
    const element = document.createElementNS(ns, tag);
    for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
    if (text) element.textContent = text;
    return element;
  };
  const width = 600;
  const height = 140;
  if (samples.length < 2) {
    svg.replaceChildren(
      svgElement("text", { x: 10, y: 70, class: "empty" }, "No samples yet: the chart fills while the job runs and this page is open."),
    );
    return;
  }
  const start = samples[0][0];
  const span = Math.max(samples[samples.length - 1][0] - start, 1);
  const top = Math.max(...samples.map(([, rate]) => rate), 1);
  const points = samples
    .map(([time, rate]) => `${((time - start) / span) * width},${height - 20 - (rate / top) * (height - 30)}`)
    .join(" ");
  svg.replaceChildren(
    svgElement("line", { x1: 0, y1: height - 20, x2: width, y2: height - 20, class: "axis" }),
    svgElement("polyline", { points, class: "line" }),
    svgElement("text", { x: 4, y: 12, class: "tick" }, `${Math.round(top).toLocaleString()} rows/s`),
    svgElement("text", { x: 4, y: height - 4, class: "tick" }, `${Math.round(span / 1000)} s`),
  );
}

function entriesQuery() {
  const query = new URLSearchParams({ pageSize: ENTRIES_PAGE_SIZE });
  for (const status of $("entry-status").value.split(",").filter(Boolean)) query.append("statuses", status);
  const code = $("error-code").value.trim();
  if (code) query.set("errorCode", code);
  const token = jobState.tokens[jobState.index];
  if (token) query.set("pageToken", token);
  return query;
}

async function loadEntries() {
  const page = await api(`/v1/jobs/${encodeURIComponent(jobState.id)}/entries?${entriesQuery()}`, {
    signal: viewAbort.signal,
  });
  jobState.tokens[jobState.index + 1] = page.nextPageToken;
  $("entries-prev").disabled = jobState.index === 0;
  $("entries-next").disabled = !page.nextPageToken;
  $("entries-total").textContent = `${number(page.totalCount)} rows match.`;
  const codes = new Set([...$("error-codes").options].map((o) => o.value));
  const rows = page.entries.map((entry) => {
    for (const error of entry.errors) codes.add(error.code);
    const errors = entry.errors.length
      ? h("ul", { class: "errors" }, ...entry.errors.map((e) => h("li", {}, h("code", {}, e.code), " ", e.field ? `${e.field}: ` : "", e.message, e.value ? ` (${JSON.stringify(e.value)})` : "")))
      : entry.note;
    return h(
      "tr",
      {},
      h("td", { "data-label": "Row" }, entry.rowNumber),
      h("td", { "data-label": "Line" }, entry.lineNumber),
      h("td", { "data-label": "Status" }, words(entry.status, "ENTRY_STATUS_")),
      h("td", { "data-label": "Key" }, entry.key),
      h("td", { "data-label": "Errors" }, errors),
    );
  });
  $("entries").querySelector("tbody").replaceChildren(...rows);
  $("error-codes").replaceChildren(...[...codes].sort().map((code) => h("option", { value: code })));
}

$("entry-filters").addEventListener("submit", (event) => {
  event.preventDefault();
  jobState.tokens = [""];
  jobState.index = 0;
  loadEntries().catch(fail);
});

$("entries-prev").addEventListener("click", () => {
  jobState.index = Math.max(0, jobState.index - 1);
  loadEntries().catch(fail);
});

$("entries-next").addEventListener("click", () => {
  jobState.index += 1;
  loadEntries().catch(fail);
});

$("cancel").addEventListener("click", () => {
  $("confirm-cancel").hidden = false;
  $("confirm-cancel-yes").focus();
});

$("confirm-cancel-no").addEventListener("click", () => {
  $("confirm-cancel").hidden = true;
  $("cancel").focus();
});

$("confirm-cancel-yes").addEventListener("click", async () => {
  $("confirm-cancel").hidden = true;
  try {
    paintJob(await api(`/v1/jobs/${encodeURIComponent(jobState.id)}:cancel`, { method: "POST", body: {} }));
    $("job-title").focus();
  } catch (error) {
    fail(error);
  }
});

/** A fresh signed link each time (links expire after an hour): the browser downloads it,
 *  and the page shows it to share. `allRows`: every row of the file with its status, not
 *  only the rows that were not imported. */
async function download(allRows) {
  try {
    const link = await api(`/v1/jobs/${encodeURIComponent(jobState.id)}:createDownloadLink`, {
      method: "POST",
      body: { allRows },
    });
    // Same origin as the page, whatever address the server thinks it has.
    const url = new URL(link.url, location.href);
    const local = `${url.pathname}${url.search}`;
    const anchor = h("a", { href: local, download: "" }, "this link");
    $("link").replaceChildren(
      "Downloading. Anyone with ",
      anchor,
      ` can download these rows until ${when(link.expireTime)}.`,
    );
    $("link").hidden = false;
    anchor.click();
  } catch (error) {
    fail(error);
  }
}
$("download").addEventListener("click", () => download(false));
$("download-all").addEventListener("click", () => download(true));

// ---- routing -----------------------------------------------------------------------------

/** Shows the view the address names; `focus` moves the focus to its title (after a
 *  navigation, so that a screen reader announces the new view). */
function route(focus = false) {
  viewAbort.abort();
  viewAbort = new AbortController();
  notify("");
  const match = location.hash.match(/^#\/jobs\/([^/]+)$/);
  const shown = match ? showJob(decodeURIComponent(match[1])) : showJobs();
  shown.then(() => focus && (match ? $("job-title") : $("jobs-title")).focus()).catch(fail);
}

window.addEventListener("hashchange", () => {
  if (location.hash !== "#main") route(true); // the skip link moves focus, not the view
});
route();
