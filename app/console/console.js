// The faceid console: the service's own API, drawn. No library, no build step, no network but
// this service. The API key (when the service has one) lives in sessionStorage only, and so
// does the collection the console works in (every call carries it as X-Collection).
"use strict";

const KEY = "faceid-api-key";
const COLLECTION = "faceid-collection";
const collection = () => sessionStorage.getItem(COLLECTION) || "default";
const $ = (id) => document.getElementById(id);

// -- the API ---------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

// `alsoOk`: statuses whose body is an answer, not an error (/readyz answers 503 with its reasons).
async function api(path, options = {}, alsoOk = []) {
  for (;;) {
    const headers = new Headers(options.headers || {});
    const key = sessionStorage.getItem(KEY);
    if (key) headers.set("X-API-Key", key);
    headers.set("X-Collection", collection());
    const response = await fetch(path, { ...options, headers });
    if (response.status === 401) {
      await askForKey(Boolean(key));
      continue;
    }
    if (!response.ok && !alsoOk.includes(response.status)) {
      let detail = response.statusText;
      try { detail = (await response.json()).detail; } catch (_) { /* not JSON */ }
      if (typeof detail !== "string") detail = JSON.stringify(detail);
      const retry = response.headers.get("Retry-After");
      throw new ApiError(response.status, `${response.status}: ${detail}${retry ? ` (retry after ${retry} s)` : ""}`);
    }
    return response;
  }
}

let keyWaiters = [];
function askForKey(wasWrong) {
  const form = $("key-form");
  form.hidden = false;
  if (wasWrong) sessionStorage.removeItem(KEY);
  $("key").focus();
  return new Promise((resolve) => keyWaiters.push(resolve));
}
$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, $("key").value);
  $("key").value = "";
  $("key-form").hidden = true;
  const waiting = keyWaiters;
  keyWaiters = [];
  waiting.forEach((resolve) => resolve());
});

// While an upload is answered, its section says so.
async function withProgress(id, work) {
  const note = $(id);
  note.hidden = false;
  note.parentElement.setAttribute("aria-busy", "true");
  try { return await work(); } finally {
    note.hidden = true;
    note.parentElement.removeAttribute("aria-busy");
  }
}

// -- status ----------------------------------------------------------------------------------
async function refreshStatus() {
  const line = $("status");
  try {
    const r = await (await api("/readyz", {}, [503])).json();
    const photo = r.photo_threshold === null ? "photo evidence off" : `photo threshold ${r.photo_threshold.toFixed(3)}`;
    line.textContent = `${r.ready ? "Ready" : "Not ready"} · collection ${collection()} · model ${r.model_id} (${r.runtime}) · threshold ${r.threshold.toFixed(3)} · `
      + `${photo} · ${r.persons} person(s), ${r.faces} face(s) · index ${r.index} · ${r.writable ? "writable" : "read-only"}`
      + (r.detail ? ` · ${r.detail}` : "");
    line.classList.toggle("not-ready", !r.ready);
  } catch (error) {
    line.textContent = `Status unknown: ${error.message}`;
    line.classList.add("not-ready");
  }
}

// -- collections -----------------------------------------------------------------------------
// The ones this key may use; the console works in one at a time.
async function loadCollections() {
  const select = $("collection");
  try {
    const names = (await (await api("/collections")).json()).map((c) => c.name);
    select.replaceChildren(...names.map((name) => { const o = document.createElement("option"); o.value = name; o.textContent = name; return o; }));
    if (names.length && !names.includes(collection())) sessionStorage.setItem(COLLECTION, names[0]);
    select.value = collection();
  } catch (error) {
    $("status").textContent = `Collections unknown: ${error.message}`;
  }
}

function useCollection(name) {
  sessionStorage.setItem(COLLECTION, name);
  offset = 0;
  refreshStatus();
  if (!$("gallery").hidden) loadGallery();
  if (!$("unknowns").hidden) loadUnknowns();
  if (identifyFile) identify();
}

// -- drawing boxes ---------------------------------------------------------------------------
// The API's boxes are in the upright photo's pixels (EXIF applied); the browser shows the photo
// upright too, so a box scales by the shown size over the natural size.
function showPhoto(container, file) {
  container.replaceChildren();
  const img = new Image();
  img.src = URL.createObjectURL(file);
  img.alt = file.name;
  container.append(img);
  return new Promise((resolve, reject) => {
    img.onload = () => resolve(img);
    img.onerror = () => resolve(img);  // the browser cannot show it; the API's answer still comes
  });
}

function drawBox(container, img, box, label, classes, onClick) {
  const el = document.createElement(onClick ? "button" : "div");
  const sx = img.clientWidth / (img.naturalWidth || 1), sy = img.clientHeight / (img.naturalHeight || 1);
  const [x1, y1, x2, y2] = box;
  Object.assign(el.style, { left: `${x1 * sx}px`, top: `${y1 * sy}px`, width: `${(x2 - x1) * sx}px`, height: `${(y2 - y1) * sy}px` });
  el.className = ["box", ...classes].join(" ");
  el.dataset.box = box.join(",");
  if (label) {
    const tag = document.createElement("span");
    tag.className = "label";
    tag.textContent = label;
    el.append(tag);
    el.title = label;
  }
  if (onClick) { el.type = "button"; el.addEventListener("click", onClick); }
  container.append(el);
  return el;
}

function faceLabel(face) {
  if (!face.match) return "unknown";
  const by = face.evidence.length ? ` (${face.evidence.join(" + ")})` : "";
  return `${face.match.name || face.match.person_id} ${face.match.similarity.toFixed(2)}${by}`;
}

function cell(row, text) { const td = document.createElement("td"); td.textContent = text; row.append(td); }

function showDetails(face) {
  const details = $("identify-details");
  details.replaceChildren();
  const h = document.createElement("h3");
  h.textContent = faceLabel(face);
  details.append(h);
  const facts = document.createElement("p");
  const reasons = face.quality ? (face.quality.reasons.join(", ") || "none") : "no face was detected here";
  facts.textContent = `Quality ${face.quality ? face.quality.score.toFixed(2) : "–"}; reasons: ${reasons}.`;
  details.append(facts);
  if (face.photo_match) {
    const photo = document.createElement("p");
    photo.textContent = `Photo evidence: a copy of ${face.photo_match.photo} of ${face.photo_match.person_id} `
      + `(photo similarity ${face.photo_match.similarity.toFixed(2)})${face.conflict ? "; the face evidence disagrees" : ""}.`;
    details.append(photo);
  }
  const table = document.createElement("table");
  const head = table.insertRow();
  ["Face candidates", "name", "similarity"].forEach((t) => { const th = document.createElement("th"); th.textContent = t; head.append(th); });
  for (const c of face.candidates) {
    const row = table.insertRow();
    cell(row, c.person_id); cell(row, c.name || ""); cell(row, c.similarity.toFixed(3));
  }
  details.append(table);
}

// -- identify --------------------------------------------------------------------------------
let identifyFile = null;

async function identify() {
  if (!identifyFile) return;
  $("identify-error").textContent = "";
  $("identify-details").replaceChildren();
  const container = $("identify-photo");
  const img = await showPhoto(container, identifyFile);
  const form = new FormData();
  form.append("image", identifyFile, identifyFile.name || "pasted.png");
  if ($("threshold").value !== "") form.append("threshold", $("threshold").value);
  if ($("top-k").value !== "") form.append("top_k", $("top-k").value);
  try {
    const answer = await withProgress("identify-progress", async () => (await api("/identify", { method: "POST", body: form })).json());
    answer.faces.forEach((face, i) => {
      const el = drawBox(container, img, face.box, faceLabel(face), face.match ? ["named"] : [], () => {
        container.querySelectorAll(".box.selected").forEach((b) => b.classList.remove("selected"));
        el.classList.add("selected");
        showDetails(face);
      });
      if (i === 0) { el.classList.add("selected"); showDetails(face); }
    });
  } catch (error) {
    $("identify-error").textContent = error.message;
  }
}

function setIdentifyFile(file) {
  if (!file) return;
  identifyFile = file;
  $("again").disabled = false;
  identify();
}

// -- enrol -----------------------------------------------------------------------------------
let enrollFiles = [];
let chosenBox = null;

function listEnrollFiles() {
  const list = $("enroll-list");
  list.replaceChildren(...enrollFiles.map((f) => { const li = document.createElement("li"); li.textContent = f.name; return li; }));
}

async function enroll(event) {
  event.preventDefault();
  $("enroll-error").textContent = "";
  $("enroll-choose").hidden = true;
  const result = $("enroll-result");
  result.replaceChildren();
  if (!enrollFiles.length) { $("enroll-error").textContent = "Add at least one photo."; return; }
  const form = new FormData();
  form.append("person_id", $("person-id").value);
  if ($("person-name").value) form.append("name", $("person-name").value);
  enrollFiles.forEach((f) => form.append("images", f, f.name));
  if (chosenBox && enrollFiles.length === 1) form.append("box", chosenBox.map((v) => Math.round(v)).join(","));
  try {
    const answer = await withProgress("enroll-progress", async () => (await api("/enroll", { method: "POST", body: form })).json());
    chosenBox = null;
    refreshStatus();
    const summary = document.createElement("p");
    summary.textContent = `${answer.person.person_id}: ${answer.faces_added} face(s) added, ${answer.person.n_faces} in all.`;
    result.append(summary);
    if (answer.advice) {
      const advice = document.createElement("p");
      advice.className = "advice";
      advice.textContent = `Tip: ${answer.advice}.`;
      result.append(advice);
    }
    for (const [i, face] of answer.faces.entries()) {
      const holder = document.createElement("div");
      holder.className = "photo";
      result.append(holder);
      const img = await showPhoto(holder, enrollFiles[i]);
      drawBox(holder, img, face.box, face.copy_of ? `enrolled (a copy of ${face.copy_of.photo})` : "enrolled", ["named"]);
      face.ignored.forEach((box) => drawBox(holder, img, box, "ignored", ["ignored"]));
    }
  } catch (error) {
    $("enroll-error").textContent = error.message;
    if (error.status === 422 && /comparable/i.test(error.message) && enrollFiles.length === 1) await offerFaces(result);
  }
}

// Two faces of comparable size: show every face found, and send the one clicked as `box`.
async function offerFaces(result) {
  const form = new FormData();
  form.append("image", enrollFiles[0], enrollFiles[0].name);
  const answer = await (await api("/identify", { method: "POST", body: form })).json();
  const holder = document.createElement("div");
  holder.className = "photo";
  result.append(holder);
  const img = await showPhoto(holder, enrollFiles[0]);
  $("enroll-choose").hidden = false;
  for (const face of answer.faces.filter((f) => f.detection_score !== null)) {
    const el = drawBox(holder, img, face.box, "this one?", ["choice"], () => {
      holder.querySelectorAll(".box.selected").forEach((b) => b.classList.remove("selected"));
      el.classList.add("selected");
      chosenBox = face.box;
    });
  }
}

// -- gallery ---------------------------------------------------------------------------------
const PAGE = 20;
let offset = 0;

async function cropImage(personId, faceId) {
  const img = document.createElement("img");
  img.alt = `face ${faceId} of ${personId}`;
  const blob = await (await api(`/persons/${encodeURIComponent(personId)}/faces/${faceId}/crop`)).blob();
  img.src = URL.createObjectURL(blob);
  return img;
}

async function showPerson(person) {
  const li = document.createElement("li");
  const title = document.createElement("strong");
  title.textContent = `${person.person_id}${person.name ? ` (${person.name})` : ""}: ${person.n_faces} face(s)`;
  const remove = document.createElement("button");
  remove.textContent = "Delete";
  remove.addEventListener("click", async () => {
    if (!confirm(`Delete ${person.person_id} and all their faces?`)) return;
    try {
      await api(`/persons/${encodeURIComponent(person.person_id)}`, { method: "DELETE" });
      loadGallery();
      refreshStatus();
    } catch (error) { $("gallery-error").textContent = error.message; }
  });
  const faces = document.createElement("div");
  li.append(title, " ", remove, faces);
  const page = await (await api(`/persons/${encodeURIComponent(person.person_id)}/faces?limit=12`)).json();
  for (const face of page.items.filter((f) => f.has_crop)) {
    const img = await cropImage(person.person_id, face.face_id);
    img.title = `${face.source}, ${face.created_at}`;
    faces.append(img);
  }
  return li;
}

async function loadGallery() {
  $("gallery-error").textContent = "";
  try {
    const q = $("filter").value.trim();
    const params = new URLSearchParams({ offset: String(offset), limit: String(PAGE) });
    if (q) params.set("q", q);
    const page = await (await api(`/persons?${params}`)).json();
    const items = await Promise.all(page.items.map(showPerson));
    $("persons").replaceChildren(...items);
    $("page").textContent = page.total ? `${offset + 1}–${offset + page.items.length} of ${page.total}` : "nobody enrolled";
    $("prev").disabled = offset === 0;
    $("next").disabled = offset + PAGE >= page.total;
  } catch (error) {
    $("gallery-error").textContent = error.message;
  }
}

// -- unknowns --------------------------------------------------------------------------------
async function unknownImage(faceId) {
  const img = document.createElement("img");
  img.alt = `unknown face ${faceId}`;
  img.src = URL.createObjectURL(await (await api(`/unknowns/faces/${faceId}/crop`)).blob());
  return img;
}

async function showCluster(cluster) {
  const li = document.createElement("li");
  const title = document.createElement("strong");
  title.textContent = `${cluster.count} face(s), seen ${cluster.first_seen} – ${cluster.last_seen}`;
  const form = document.createElement("form");
  const id = document.createElement("input");
  id.required = true; id.placeholder = "person id"; id.pattern = "[A-Za-z0-9][A-Za-z0-9_.@:\\-]{0,127}";
  const name = document.createElement("input");
  name.placeholder = "name";
  const add = document.createElement("button");
  add.type = "submit"; add.textContent = "Enrol as";
  const drop = document.createElement("button");
  drop.type = "button"; drop.textContent = "Discard";
  form.append(add, " ", id, " ", name, " ", drop);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = new FormData();
    body.append("person_id", id.value);
    if (name.value) body.append("name", name.value);
    try {
      await api(`/unknowns/${cluster.cluster}/enroll`, { method: "POST", body });
      loadUnknowns();
      refreshStatus();
    } catch (error) { $("unknowns-error").textContent = error.message; }
  });
  drop.addEventListener("click", async () => {
    if (!confirm(`Discard these ${cluster.count} face(s)?`)) return;
    try {
      await api(`/unknowns/${cluster.cluster}`, { method: "DELETE" });
      loadUnknowns();
    } catch (error) { $("unknowns-error").textContent = error.message; }
  });
  const faces = document.createElement("div");
  for (const faceId of cluster.faces) faces.append(await unknownImage(faceId));
  li.append(title, faces, form);
  return li;
}

async function loadUnknowns() {
  $("unknowns-error").textContent = "";
  try {
    const page = await (await api("/unknowns?limit=50")).json();
    const items = await Promise.all(page.items.map(showCluster));
    $("clusters").replaceChildren(...items);
    if (!page.items.length) $("unknowns-error").textContent = "no unknown faces kept";
  } catch (error) {
    $("clusters").replaceChildren();
    $("unknowns-error").textContent = error.message;
  }
}

// -- wiring ----------------------------------------------------------------------------------
function dropZone(zone, onFiles) {
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); onFiles([...e.dataTransfer.files]); });
  // From the keyboard, Enter or Space on the zone opens the file chooser.
  zone.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); zone.querySelector("input[type=file]").click(); }
  });
}

function showTab(name) {
  document.querySelectorAll("nav button").forEach((b) => b.classList.toggle("active", b.dataset.tab === name));
  document.querySelectorAll(".tab").forEach((s) => { s.hidden = s.id !== name; });
  if (name === "gallery") loadGallery();
  if (name === "unknowns") loadUnknowns();
}

document.querySelectorAll("nav button").forEach((b) => b.addEventListener("click", () => showTab(b.dataset.tab)));
dropZone($("identify-drop"), (files) => setIdentifyFile(files[0]));
$("identify-file").addEventListener("change", (e) => setIdentifyFile(e.target.files[0]));
document.addEventListener("paste", (e) => {
  const file = [...(e.clipboardData?.files || [])][0];
  if (file && !$("identify").hidden) setIdentifyFile(file);
});
$("again").addEventListener("click", identify);
dropZone($("enroll-drop"), (files) => { enrollFiles = enrollFiles.concat(files); chosenBox = null; listEnrollFiles(); });
$("enroll-files").addEventListener("change", (e) => { enrollFiles = enrollFiles.concat([...e.target.files]); chosenBox = null; listEnrollFiles(); });
$("enroll-form").addEventListener("submit", enroll);
$("filter").addEventListener("change", () => { offset = 0; loadGallery(); });
$("prev").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); loadGallery(); });
$("next").addEventListener("click", () => { offset += PAGE; loadGallery(); });
$("refresh-status").addEventListener("click", refreshStatus);
$("collection").addEventListener("change", (e) => useCollection(e.target.value));
loadCollections().then(refreshStatus);
