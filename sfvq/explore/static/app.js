// sfvq explore: the page's logic. Plain JS, no dependencies; every request goes to this server's /api.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, bits: null, K: 0, segment: null, corner: null, segments: null };

// ------------------------------------------------------------------ requests
async function errorOf(response) {
  try {
    const data = await response.json();
    return data.error || `HTTP ${response.status}`;
  } catch (e) {
    return `HTTP ${response.status}`;
  }
}

async function getJSON(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(await errorOf(r));
  return r.json();
}

async function postJSON(url, body) {
  const r = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!r.ok) throw new Error(await errorOf(r));
  return r.json();
}

async function getBlob(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(await errorOf(r));
  return { blob: await r.blob(), ms: r.headers.get("X-Render-Ms") };
}

// Put a blob into an <img>, wait until it is decoded, then free the previous one.
async function showBlob(img, blob) {
  const old = img.dataset.objectUrl;
  const url = URL.createObjectURL(blob);
  img.src = url;
  img.dataset.objectUrl = url;
  await img.decode();
  if (old) URL.revokeObjectURL(old);
  if (img.id !== "live") {
    // Grids of small images (32 or 64 px) are shown at twice their size, pixels kept sharp.
    img.style.width = img.naturalWidth < 500 ? `${2 * img.naturalWidth}px` : "";
  }
}

function showError(message) {
  const el = $("error");
  el.textContent = message;
  el.hidden = false;
}

function clearError() {
  $("error").hidden = true;
}

// A render queue that keeps only the newest request: while one image is on its way, later requests
// replace each other, so dragging a slider never piles up renders on the server.
function latestOnly(run) {
  let busy = false;
  let pending = null;
  return function request(args) {
    pending = args;
    if (busy) return;
    busy = true;
    (async () => {
      while (pending !== null) {
        const next = pending;
        pending = null;
        try {
          await run(next);
        } catch (e) {
          showError(e.message);
        }
      }
      busy = false;
    })();
  };
}

// ------------------------------------------------------------------ the live image
const requestLive = latestOnly(async ({ bits, t }) => {
  const started = performance.now();
  const { blob, ms } = await getBlob(`/api/image?bits=${bits}&t=${t}`);
  const img = $("live");
  await showBlob(img, blob);
  img.dataset.bits = String(bits);
  img.dataset.t = String(t);
  const total = performance.now() - started;
  $("latency").textContent = `bits ${bits}, t = ${t}: rendered in ${ms} ms on the server, ${total.toFixed(0)} ms in all`;
  clearError();
});

function onSlider() {
  const t = $("t").value;
  $("t-value").textContent = Number(t).toFixed(2);
  requestLive({ bits: state.bits, t });
}

function moveTo(t) {
  $("t").value = String(t);
  onSlider();
}

// ------------------------------------------------------------------ the panoptic map
function fmt(x, digits = 3) {
  return x === null || x === undefined ? "-" : Number(x).toPrecision(digits);
}

async function buildMap() {
  const bits = state.bits;
  const map = $("map");
  map.replaceChildren();
  $("map-link").href = `/api/map?bits=${bits}`;
  for (let i = 0; i < state.K; i++) {
    const corner = document.createElement("button");
    corner.type = "button";
    corner.className = "corner";
    corner.dataset.index = String(i);
    corner.title = `corner ${i}`;
    const img = document.createElement("img");
    img.alt = `corner ${i}`;
    img.src = `/api/corner?bits=${bits}&index=${i}`;
    const label = document.createElement("span");
    label.textContent = String(i);
    corner.append(img, label);
    corner.addEventListener("click", () => selectCorner(i));
    map.append(corner);
    if (i < state.K - 1) {
      const seg = document.createElement("button");
      seg.type = "button";
      seg.className = "segment";
      seg.dataset.index = String(i);
      seg.title = `segment ${bits}:${i}`;
      seg.setAttribute("aria-label", `segment ${i}`);
      seg.addEventListener("click", () => selectSegment(i));
      map.append(seg);
    }
  }
  const data = await getJSON(`/api/segments?bits=${bits}`);
  if (state.bits !== bits) return;
  state.segments = data;
  for (const row of data.segments) {
    const seg = map.querySelector(`.segment[data-index="${row.index}"]`);
    const usage = row.usage === null ? "" : `, usage ${(100 * row.usage).toFixed(1)}%`;
    const note = row.annotation ? `\n${row.annotation.summary}` : "";
    seg.title = `segment ${row.spec}: length ${fmt(row.length)}, std ${fmt(row.std)}${usage}${note}`;
  }
  $("filter-box").hidden = !data.annotated;
  applyFilter();
  for (const i of data.empty_corners) {
    map.querySelector(`.corner[data-index="${i}"]`).classList.add("empty");
  }
}

// ------------------------------------------------------------------ filtering segments by their annotations
// Every word typed must appear in a segment's summary (or its spec, e.g. "6:3"); the others are dimmed and the
// matches listed as buttons.
function applyFilter() {
  const box = $("seg-matches");
  box.replaceChildren();
  const words = $("seg-filter").value.toLowerCase().split(/\s+/).filter(Boolean);
  const rows = state.segments ? state.segments.segments : [];
  let count = 0;
  for (const row of rows) {
    const text = `${row.spec} ${row.annotation ? row.annotation.summary : ""}`.toLowerCase();
    const match = words.length > 0 && words.every((w) => text.includes(w));
    const seg = $("map").querySelector(`.segment[data-index="${row.index}"]`);
    if (seg) seg.classList.toggle("dim", words.length > 0 && !match);
    if (!match) continue;
    count += 1;
    const b = document.createElement("button");
    b.type = "button";
    b.className = "match";
    b.dataset.index = String(row.index);
    b.textContent = `${row.spec}: ${row.annotation ? row.annotation.summary : ""}`;
    b.addEventListener("click", () => selectSegment(row.index));
    box.append(b);
  }
  $("filter-count").textContent = words.length ? `${count} of ${rows.length} segments match` : "";
}

function showAnnotation(row) {
  const a = row ? row.annotation : null;
  $("seg-annotation").hidden = !a;
  if (!a) return;
  const heat = $("seg-heat");
  heat.hidden = !a.heat;
  if (a.heat) heat.src = a.heat;
  const local = a.locality === null ? "" : `; ${(100 * a.locality).toFixed(0)}% of its change in one region`;
  const layers = a.layers === null ? "" :
    `; layers ${a.layers} keep ${a.layer_share === null ? "?" : (100 * a.layer_share).toFixed(0) + "%"} of it (layers: auto)`;
  $("seg-note").textContent = `${a.summary}${local}${layers}`;
}

function highlight(selector, index) {
  for (const el of $("map").querySelectorAll(".corner, .segment")) el.classList.remove("selected");
  if (index !== null) $("map").querySelector(`${selector}[data-index="${index}"]`).classList.add("selected");
}

function selectCorner(i) {
  state.corner = i;
  state.segment = null;
  highlight(".corner", i);
  $("edit-section").hidden = true;
  moveTo(i);
}

function selectSegment(i) {
  state.segment = i;
  state.corner = null;
  highlight(".segment", i);
  $("edit-section").hidden = false;
  $("seg-label").textContent = `${state.bits}:${i}`;
  const row = state.segments ? state.segments.segments[i] : null;
  const unit = state.info.sigma_unit === "std" ? "std of the data along the segment" : "raw units";
  $("seg-info").textContent = row
    ? `length ${fmt(row.length)}, std ${fmt(row.std)}` +
      (row.usage === null ? "" : `, ${(100 * row.usage).toFixed(1)}% of the latents project onto it`) +
      `. Columns: -sigma, 0, +sigma (sigma in ${unit}).`
    : "";
  showAnnotation(row);
  $("aug-preview").hidden = true;
  $("save-status").textContent = "";
  $("aug-status").textContent = "";
  moveTo(i + 0.5);
  onEditControls();
}

// ------------------------------------------------------------------ edits of the selected segment
// The inclusive layer range typed in the two fields, or null for all layers (and where there are none).
function layersText() {
  const L = state.info.num_ws;
  if (L <= 1) return null;
  const auto = $("layers-auto").checked;
  for (const id of ["layer-start", "layer-stop"]) $(id).disabled = auto;
  if (auto) return "auto";
  const a = Number($("layer-start").value);
  const b = Number($("layer-stop").value);
  return a === 0 && b === L - 1 ? null : `${a}-${b}`;
}

const requestEdits = latestOnly(async (p) => {
  let url = `/api/edit?bits=${p.bits}&segment=${p.segment}&seeds=${encodeURIComponent(p.seeds)}&sigma=${p.sigma}`;
  if (p.layers !== null) url += `&layers=${encodeURIComponent(p.layers)}`;
  const { blob } = await getBlob(url);
  const img = $("edits");
  await showBlob(img, blob);
  img.dataset.segment = String(p.segment);
  img.dataset.bits = String(p.bits);
  img.dataset.sigma = String(p.sigma);
  img.dataset.seeds = p.seeds;
  img.dataset.layers = p.layers === null ? "" : p.layers;
  clearError();
});

function onEditControls() {
  $("sigma-value").textContent = $("sigma").value;
  if (state.segment === null) return;
  requestEdits({
    bits: state.bits,
    segment: state.segment,
    seeds: $("seeds").value.trim(),
    sigma: $("sigma").value,
    layers: layersText(),
  });
}

// ------------------------------------------------------------------ saving and augmenting
function setStatus(id, ok, text) {
  const el = $(id);
  el.className = `status ${ok ? "ok" : "bad"}`;
  el.textContent = text;
}

async function saveDirection() {
  const name = $("dir-name").value.trim();
  const body = { name, bits: state.bits, segment: state.segment };
  const layers = layersText();
  if (layers !== null) body.layers = layers;
  try {
    const out = await postJSON("/api/directions", body);
    const s = out.saved;
    const range = s.layer_start === null ? "all layers" : `layers ${s.layer_start}-${s.layer_stop - 1}`;
    setStatus("save-status", true, `saved "${s.name}" (${state.bits}:${state.segment}, ${range}) to ${out.file}`);
    await refreshSaved();
  } catch (e) {
    setStatus("save-status", false, e.message);
  }
}

async function augment() {
  const button = $("augment");
  const body = {
    name: $("aug-name").value.trim(),
    bits: state.bits,
    segment: state.segment,
    n: Number($("aug-n").value),
    seed: Number($("aug-seed").value),
  };
  button.disabled = true;
  setStatus("aug-status", true, "rendering...");
  try {
    const out = await postJSON("/api/augment", body);
    const { blob } = await getBlob(out.preview);
    const img = $("aug-preview");
    img.hidden = false;
    await showBlob(img, blob);
    img.dataset.name = out.name;
    setStatus("aug-status", true, `wrote ${out.n} images along ${out.segment} into ${out.folder}/`);
  } catch (e) {
    setStatus("aug-status", false, e.message);
  } finally {
    button.disabled = false;
  }
}

async function refreshSaved() {
  const data = await getJSON("/api/directions");
  const body = $("saved").querySelector("tbody");
  body.replaceChildren();
  for (const d of data.directions) {
    const tr = document.createElement("tr");
    for (const v of [d.name, d.bits, d.segment, d.layers, fmt(d.length), fmt(d.std)]) {
      const td = document.createElement("td");
      td.textContent = v === null || v === undefined ? "" : String(v);
      tr.append(td);
    }
    body.append(tr);
  }
}

// ------------------------------------------------------------------ start
async function setBits(bits) {
  state.bits = bits;
  state.K = state.info.corners[String(bits)];
  state.segment = null;
  state.corner = null;
  state.segments = null;
  $("edit-section").hidden = true;
  const slider = $("t");
  slider.max = String(state.K - 1);
  if (Number(slider.value) > state.K - 1) slider.value = String(state.K - 1);
  onSlider();
  await buildMap();
}

async function start() {
  const info = await getJSON("/api/info");
  state.info = info;
  const space = info.space.kind === "features" ? `features:${info.space.layer}` : info.space.kind;
  $("run-info").textContent = `run ${info.run}: ${info.network}, space ${space} (${info.space.dim}-D), ` +
    `bitrates ${info.bits[0]}-${info.bits[info.bits.length - 1]}` +
    (info.num_ws > 1 ? `, ${info.num_ws} style layers` : "");
  const select = $("bits");
  for (const b of info.bits) {
    const opt = document.createElement("option");
    opt.value = String(b);
    opt.textContent = `${b} bits (${info.corners[String(b)]} corners)`;
    select.append(opt);
  }
  const preferred = info.bits.filter((b) => b <= 5);
  const first = preferred.length ? preferred[preferred.length - 1] : info.bits[0];
  select.value = String(first);
  $("sigma").max = String(info.limits.sigma_max);
  $("seeds").title = `at most ${info.limits.max_seeds} seeds, e.g. 0-3 or 1,5,9`;
  $("aug-n").max = String(info.limits.augment_max);
  $("dir-name").pattern = info.limits.name_pattern.replace(/^\^|\$$/g, "");
  $("aug-name").pattern = $("dir-name").pattern;
  if (info.num_ws > 1) {
    $("layers-box").hidden = false;
    for (const id of ["layer-start", "layer-stop"]) $(id).max = String(info.num_ws - 1);
    $("layer-stop").value = String(info.num_ws - 1);
  }
  $("t").addEventListener("input", onSlider);
  select.addEventListener("change", () => setBits(Number(select.value)).catch((e) => showError(e.message)));
  for (const id of ["sigma", "seeds", "layer-start", "layer-stop"]) $(id).addEventListener("input", onEditControls);
  $("layers-auto").addEventListener("change", onEditControls);
  $("seg-filter").addEventListener("input", applyFilter);
  $("save-dir").addEventListener("click", saveDirection);
  $("augment").addEventListener("click", augment);
  await setBits(first);
  await refreshSaved();
  document.body.dataset.ready = "1";
}

start().catch((e) => showError(`cannot load the run: ${e.message}`));
