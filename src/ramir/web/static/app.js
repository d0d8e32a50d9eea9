// ramir web page: upload -> POST /api/restore -> before/after slider + download link.
"use strict";

const $ = (id) => document.getElementById(id);
let maxUploadBytes = null;
let urls = [];
let experts = [];       // a routed model's restorations, offered as alternatives after a restore
let lastFile = null;

function setState(state, message) {
  document.body.dataset.state = state;            // "idle" | "working" | "done" | "error" (tests wait on it)
  $("status").textContent = state === "error" ? "" : (message || "");
  $("error").hidden = state !== "error";
  if (state === "error") $("error").textContent = message;
}

function setSplit(percent) {
  $("after").style.clipPath = `inset(0 0 0 ${percent}%)`;
  $("divider").style.left = `${percent}%`;
}

async function loadInfo() {
  try {
    const info = await (await fetch("/api/info")).json();
    maxUploadBytes = info.max_upload_bytes;
    experts = info.experts || [];
    const select = $("expert-choice");
    experts.concat(["none"]).forEach((name) => {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = name === "none" ? "none (leave the photo unchanged)" : name;
      select.appendChild(option);
    });
    $("model-info").textContent =
      `model: ${info.model} · uploads up to ${(info.max_upload_bytes / 2 ** 20).toFixed(0)} MB`;
  } catch (err) {
    $("model-info").textContent = "server not reachable";
  }
}

async function restore(file, expert) {
  if (!file) return;
  lastFile = file;
  if (maxUploadBytes !== null && file.size > maxUploadBytes) {
    setState("error", `"${file.name}" is ${(file.size / 2 ** 20).toFixed(1)} MB; ` +
      `the limit is ${(maxUploadBytes / 2 ** 20).toFixed(1)} MB`);
    return;
  }
  urls.forEach(URL.revokeObjectURL);
  urls = [];
  $("result").hidden = true;
  setState("working", `restoring ${file.name}${expert ? ` with ${expert}` : ""}…`);
  const form = new FormData();
  form.append("image", file, file.name);
  let response;
  try {
    const query = expert ? `?expert=${encodeURIComponent(expert)}` : "";
    response = await fetch(`/api/restore${query}`, { method: "POST", body: form });
  } catch (err) {
    setState("error", `upload failed: ${err.message}`);
    return;
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    setState("error", message);
    return;
  }
  const seconds = response.headers.get("X-Restore-Seconds");
  const applied = response.headers.get("X-Ramir-Applied");
  $("applied").hidden = !applied;
  $("applied").textContent = applied ? `applied: ${applied}` : "";
  $("choose").hidden = experts.length === 0;
  $("expert-choice").value = expert || "";
  const blob = await response.blob();
  const beforeUrl = URL.createObjectURL(file);
  const afterUrl = URL.createObjectURL(blob);
  urls = [beforeUrl, afterUrl];
  const stem = file.name.replace(/\.[^.]+$/, "") || "image";
  $("download").href = afterUrl;
  $("download").download = `${stem}_restored.png`;
  $("timing").textContent = seconds ? `restored in ${Number(seconds).toFixed(2)} s` : "";
  await Promise.all([loadImage($("before"), beforeUrl), loadImage($("after"), afterUrl)]);
  $("result").hidden = false;
  fitViewer();
  setSplit($("slider").value);
  setState("done", `restored ${file.name}`);
}

// show small images enlarged (at least 560 px wide) and large ones scaled to the page
function fitViewer() {
  const natural = $("after").naturalWidth || 560;
  const room = $("result").parentElement.clientWidth;
  $("viewer").style.width = `${Math.min(room, Math.max(natural, 560))}px`;
}

// dragging on the picture moves the split as the slider does
function dragSplit(event) {
  const box = $("compare").getBoundingClientRect();
  const percent = Math.round(Math.min(100, Math.max(0, (100 * (event.clientX - box.left)) / box.width)));
  $("slider").value = percent;
  setSplit(percent);
}

function loadImage(img, url) {
  return new Promise((resolve) => {
    img.onload = () => resolve(true);
    img.onerror = () => resolve(false);   // e.g. a TIFF the browser cannot show: the result still is
    img.src = url;
  });
}

function init() {
  setState("idle", "");
  loadInfo();
  const drop = $("drop");
  $("file").addEventListener("change", (e) => restore(e.target.files[0]));
  $("again").addEventListener("click", () => restore(lastFile, $("expert-choice").value));
  $("slider").addEventListener("input", (e) => setSplit(e.target.value));
  $("compare").addEventListener("pointerdown", (e) => {
    $("compare").setPointerCapture(e.pointerId);
    dragSplit(e);
  });
  $("compare").addEventListener("pointermove", (e) => {
    if ($("compare").hasPointerCapture(e.pointerId)) dragSplit(e);
  });
  window.addEventListener("resize", () => { if (!$("result").hidden) fitViewer(); });
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file").click(); }
  });
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => {
    e.preventDefault(); drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => {
    e.preventDefault(); drop.classList.remove("over");
  }));
  drop.addEventListener("drop", (e) => restore(e.dataTransfer.files[0]));
  // a file dropped outside the zone should not navigate away from the page
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
}

init();
