// sfvq explore: your own images. Upload a photo, see it projected and placed on the map, edit it along a
// segment with the slider. Uses app.js's helpers ($, state, getJSON, getBlob, showBlob, showError,
// latestOnly, moveTo, fmt); every request goes to this server's /api/photos.
"use strict";

const photoState = { id: null, data: null };

function photoStatus(ok, text) {
  const el = $("photo-status");
  el.className = `status ${ok ? "ok" : "bad"}`;
  el.textContent = text;
}

// The photo's place at the map's current bitrate, in words.
function describePlace(data) {
  const row = data.bits[String(state.bits)];
  if (!row) return "";
  const o = data.outlier;
  const near = row.nearest.map((n) => `${n.corner} (${fmt(n.distance)})`).join(", ");
  const verdict = o.off_map
    ? `OFF THE MAP: farther from the curve than ${o.percentile.toFixed(1)} % of the sampled latents`
    : `on the map: farther from the curve than ${o.percentile.toFixed(1)} % of the sampled latents`;
  return `At ${state.bits} bits it lies at t = ${row.t.toFixed(2)} (segment ${row.segment}), ` +
    `distance ${fmt(row.distance)}; nearest corners ${near}. ${verdict} (at ${o.bits} bits). ` +
    `Projection: PSNR ${fmt(data.psnr, 4)} dB, SSIM ${fmt(data.ssim)}.`;
}

const requestPhotoEdit = latestOnly(async (p) => {
  let url = `/api/photos/${p.id}/edit?bits=${p.bits}&segment=${p.segment}&sigma=${p.sigma}`;
  if (p.layers !== null) url += `&layers=${encodeURIComponent(p.layers)}`;
  const { blob } = await getBlob(url);
  const img = $("photo-edit");
  await showBlob(img, blob);
  img.dataset.sigma = String(p.sigma);
  img.dataset.segment = String(p.segment);
});

function onPhotoEdit() {
  $("photo-sigma-value").textContent = $("photo-sigma").value;
  if (photoState.id === null) return;
  const K = state.info.corners[String(state.bits)];
  const segment = Math.min(Math.max(0, Number($("photo-segment").value)), K - 2);
  requestPhotoEdit({
    id: photoState.id,
    bits: state.bits,
    segment,
    sigma: $("photo-sigma").value,
    layers: typeof layersText === "function" ? layersText() : null,
  });
}

async function showPhoto(data) {
  photoState.id = data.id;
  photoState.data = data;
  $("photo-result").hidden = false;
  const { blob } = await getBlob(data.files.compare);
  await showBlob($("photo-compare"), blob);
  $("photo-place").textContent = describePlace(data);
  const row = data.bits[String(state.bits)];
  const K = state.info.corners[String(state.bits)];
  $("photo-segment").max = String(K - 2);
  if (row) $("photo-segment").value = String(row.segment);
  onPhotoEdit();
}

async function uploadPhoto() {
  const file = $("photo-file").files[0];
  if (!file) {
    photoStatus(false, "choose an image first");
    return;
  }
  const button = $("photo-upload");
  button.disabled = true;
  photoStatus(true, "projecting...");
  try {
    const r = await fetch("/api/photos", { method: "POST", headers: { "Content-Type": file.type }, body: file });
    if (!r.ok) throw new Error(await errorOf(r));
    const data = await r.json();
    await showPhoto(data);
    photoStatus(true, data.new ? `projected and placed (photo ${data.id})` : `uploaded before (photo ${data.id})`);
    await refreshPhotos();
  } catch (e) {
    photoStatus(false, e.message);
  } finally {
    button.disabled = false;
  }
}

async function refreshPhotos() {
  const data = await getJSON("/api/photos");
  const list = $("photo-list");
  list.replaceChildren();
  for (const p of data.photos) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "photo-thumb";
    b.title = `photo ${p.id}`;
    const img = document.createElement("img");
    img.alt = `photo ${p.id}`;
    img.src = p.files.photo;
    b.append(img);
    b.addEventListener("click", async () => {
      try {
        await showPhoto(await getJSON(`/api/photos/${p.id}`));
        photoStatus(true, `photo ${p.id}`);
      } catch (e) {
        photoStatus(false, e.message);
      }
    });
    list.append(b);
  }
}

function goToPhoto() {
  const row = photoState.data && photoState.data.bits[String(state.bits)];
  if (row) moveTo(row.t);
}

async function startPhotos() {
  // app.js sets data-ready on the body once the run is loaded
  while (document.body.dataset.ready !== "1") await new Promise((r) => setTimeout(r, 50));
  $("photo-sigma").max = String(state.info.limits.sigma_max);
  $("photo-sigma").min = String(-state.info.limits.sigma_max);
  $("photo-upload").addEventListener("click", uploadPhoto);
  $("photo-goto").addEventListener("click", goToPhoto);
  for (const id of ["photo-sigma", "photo-segment"]) $(id).addEventListener("input", onPhotoEdit);
  $("bits").addEventListener("change", () => {
    if (photoState.data) showPhoto(photoState.data).catch((e) => showError(e.message));
  });
  await refreshPhotos();
}

startPhotos().catch((e) => showError(`photos: ${e.message}`));
