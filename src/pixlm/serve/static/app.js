// pixlm web UI: plain JavaScript, no build step, no external requests.
"use strict";

const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------ tabs
for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => {
    for (const t of document.querySelectorAll(".tab")) {
      const on = t === tab;
      t.classList.toggle("active", on);
      t.setAttribute("aria-selected", String(on));
      $(t.dataset.panel).hidden = !on;
    }
  });
}

fetch("/v1/models").then((r) => r.json()).then((j) => {
  if (j.data && j.data[0]) $("model").textContent = "model: " + j.data[0].id;
}).catch(() => {});

// ------------------------------------------------------------------ helpers
function numberOrNull(input) {
  const v = input.value.trim();
  return v === "" ? null : Number(v);
}

function errorText(body, status) {
  if (body && body.error && body.error.message) return body.error.message;
  return "request failed (HTTP " + status + ")";
}

function figure(src, name, label) {
  const fig = document.createElement("figure");
  const img = document.createElement("img");
  img.src = src;
  img.alt = label;
  const cap = document.createElement("figcaption");
  const text = document.createElement("span");
  text.textContent = label;
  const link = document.createElement("a");
  link.href = src;
  link.download = name;
  link.textContent = "download";
  cap.append(text, link);
  fig.append(img, cap);
  return fig;
}

function showImages(container, data, stem) {
  container.replaceChildren();
  data.forEach((item, i) => {
    const src = item.b64_json ? "data:image/png;base64," + item.b64_json : item.url;
    // revised_prompt: what the model read the prompt as (free wording in its caption grammar, with a layout)
    const label = item.revised_prompt ? `#${i + 1}: ${item.revised_prompt}` : `#${i + 1}`;
    container.append(figure(src, `${stem}-${i + 1}.png`, label));
  });
}

// Server-sent events over a POST: the body is read as a stream and split on blank lines.
async function postEvents(url, payload, onEvent) {
  const resp = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(payload),
  });
  if (!resp.ok) {
    let body = null;
    try { body = await resp.json(); } catch (e) { /* not JSON */ }
    throw new Error(errorText(body, resp.status));
  }
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const chunk = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message";
      const data = [];
      for (const line of chunk.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trim());
      }
      if (data.length) onEvent(event, JSON.parse(data.join("\n")));
    }
  }
}

// ------------------------------------------------------------------ generate
$("generate-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const button = $("generate");
  const prompt = $("prompt").value.trim();
  $("generate-error").textContent = "";
  if (!prompt) {
    $("generate-error").textContent = "Write a prompt first.";
    return;
  }
  const payload = {
    prompt,
    n: numberOrNull($("n")) ?? 1,
    size: $("size").value,
    response_format: "b64_json",
  };
  const negative = $("negative").value.trim();
  if (negative) payload.negative_prompt = negative;
  for (const [key, input] of [["seed", $("seed")], ["steps", $("steps")], ["guidance_scale", $("guidance")]]) {
    const v = numberOrNull(input);
    if (v !== null) payload[key] = v;
  }
  button.disabled = true;
  $("progress-box").hidden = false;
  $("progress").value = 0;
  $("progress-label").textContent = "queued…";
  $("previews").replaceChildren();
  const started = performance.now();
  try {
    await postEvents("/v1/images/generations/stream", payload, (event, data) => {
      if (event === "queued") {
        $("progress-label").textContent = `queued (${data.queue_depth} waiting)`;
      } else if (event === "progress") {
        $("progress").max = data.total;
        $("progress").value = data.step;
        $("progress-label").textContent = `step ${data.step} / ${data.total}`;
        const box = $("previews");
        box.replaceChildren();
        data.previews.forEach((b64, i) => {
          const img = document.createElement("img");
          img.src = "data:image/png;base64," + b64;
          img.alt = `preview ${i + 1}`;
          box.append(img);
        });
      } else if (event === "result") {
        const secs = ((performance.now() - started) / 1000).toFixed(2);
        $("progress-label").textContent = `done: ${data.data.length} image(s) in ${secs} s`;
        $("previews").replaceChildren();
        showImages($("results"), data.data, "pixlm" + (payload.seed !== undefined ? "-seed" + payload.seed : ""));
      } else if (event === "error") {
        throw new Error(errorText(data, 500));
      }
    });
  } catch (e) {
    $("generate-error").textContent = e.message;
    $("progress-label").textContent = "";
  } finally {
    button.disabled = false;
  }
});

// ------------------------------------------------------------------ edit: picture, mask brush and rectangle
const imageCanvas = $("edit-image");
const maskCanvas = $("edit-mask");
const imageCtx = imageCanvas.getContext("2d");
const maskCtx = maskCanvas.getContext("2d");
let haveImage = false;

function drawUploaded(file, canvas) {
  return new Promise((resolve, reject) => {
    const url = URL.createObjectURL(file);
    const img = new Image();
    img.onload = () => {
      const s = Math.min(img.width, img.height);  // centre crop, as the server does
      const ctx = canvas.getContext("2d");
      ctx.fillStyle = "#fff";
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(img, (img.width - s) / 2, (img.height - s) / 2, s, s, 0, 0, canvas.width, canvas.height);
      URL.revokeObjectURL(url);
      resolve(img);
    };
    img.onerror = () => { URL.revokeObjectURL(url); reject(new Error("that file is not a picture the browser can read")); };
    img.src = url;
  });
}

$("edit-file").addEventListener("change", async () => {
  const file = $("edit-file").files[0];
  if (!file) return;
  $("edit-error").textContent = "";
  try {
    await drawUploaded(file, imageCanvas);
    maskCtx.clearRect(0, 0, maskCanvas.width, maskCanvas.height);
    haveImage = true;
  } catch (e) {
    $("edit-error").textContent = e.message;
  }
});

$("clear-mask").addEventListener("click", () => maskCtx.clearRect(0, 0, maskCanvas.width, maskCanvas.height));

function tool() {
  return document.querySelector("input[name=tool]:checked").value;
}

function canvasPoint(ev) {
  const r = maskCanvas.getBoundingClientRect();
  return [(ev.clientX - r.left) * maskCanvas.width / r.width, (ev.clientY - r.top) * maskCanvas.height / r.height];
}

let drag = null;  // {x, y, snapshot} while the pointer is down
maskCanvas.addEventListener("pointerdown", (ev) => {
  maskCanvas.setPointerCapture(ev.pointerId);
  const [x, y] = canvasPoint(ev);
  drag = { x, y, snapshot: maskCtx.getImageData(0, 0, maskCanvas.width, maskCanvas.height) };
  maskCtx.fillStyle = maskCtx.strokeStyle = "rgb(230, 30, 30)";
  if (tool() === "brush") paint(x, y, x, y);
});
maskCanvas.addEventListener("pointermove", (ev) => {
  if (!drag) return;
  const [x, y] = canvasPoint(ev);
  if (tool() === "brush") {
    paint(drag.x, drag.y, x, y);
    drag.x = x;
    drag.y = y;
  } else {
    maskCtx.putImageData(drag.snapshot, 0, 0);
    maskCtx.fillRect(Math.min(drag.x, x), Math.min(drag.y, y), Math.abs(x - drag.x), Math.abs(y - drag.y));
  }
});
for (const name of ["pointerup", "pointercancel"]) maskCanvas.addEventListener(name, () => { drag = null; });

function paint(x0, y0, x1, y1) {
  maskCtx.lineWidth = Number($("brush").value);
  maskCtx.lineCap = "round";
  maskCtx.beginPath();
  maskCtx.moveTo(x0, y0);
  maskCtx.lineTo(x1, y1);
  maskCtx.stroke();
}

function canvasBlob(canvas) {
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

// OpenAI's mask convention: an RGBA PNG, transparent (alpha 0) where the picture is to be redrawn.
async function maskBlob() {
  const w = maskCanvas.width, h = maskCanvas.height;
  const painted = maskCtx.getImageData(0, 0, w, h).data;
  const out = document.createElement("canvas");
  out.width = w;
  out.height = h;
  const ctx = out.getContext("2d");
  const img = ctx.createImageData(w, h);
  let any = false;
  for (let i = 0; i < painted.length; i += 4) {
    const hole = painted[i + 3] > 0;
    any = any || hole;
    img.data[i + 3] = hole ? 0 : 255;
  }
  ctx.putImageData(img, 0, 0);
  return any ? canvasBlob(out) : null;
}

async function postForm(url, form) {
  const resp = await fetch(url, { method: "POST", body: form });
  let body = null;
  try { body = await resp.json(); } catch (e) { /* not JSON */ }
  if (!resp.ok) throw new Error(errorText(body, resp.status));
  return body;
}

function editCommon(form) {
  form.append("image", imageBlobCache, "image.png");
  form.append("n", String(numberOrNull($("edit-n")) ?? 1));
  form.append("size", "256x256");
  form.append("response_format", "b64_json");
  const seed = numberOrNull($("edit-seed"));
  if (seed !== null) form.append("seed", String(seed));
  const steps = numberOrNull($("edit-steps"));
  if (steps !== null) form.append("steps", String(steps));
}

let imageBlobCache = null;

async function runEdit(kind) {
  $("edit-error").textContent = "";
  if (!haveImage) {
    $("edit-error").textContent = "Upload a picture first.";
    return;
  }
  const buttons = [$("edit-submit"), $("vary-submit")];
  buttons.forEach((b) => { b.disabled = true; });
  $("edit-status").textContent = kind === "edit" ? "editing…" : "making variations…";
  try {
    imageBlobCache = await canvasBlob(imageCanvas);
    const form = new FormData();
    editCommon(form);
    let url;
    if (kind === "edit") {
      const prompt = $("edit-prompt").value.trim();
      if (!prompt) throw new Error("Write what to draw in the painted area.");
      const mask = await maskBlob();
      if (!mask) throw new Error("Paint the area to redraw first (brush or rectangle).");
      form.append("mask", mask, "mask.png");
      form.append("prompt", prompt);
      url = "/v1/images/edits";
    } else {
      form.append("strength", String(numberOrNull($("strength")) ?? 0.5));
      const prompt = $("edit-prompt").value.trim();
      if (prompt) form.append("prompt", prompt);
      url = "/v1/images/variations";
    }
    const body = await postForm(url, form);
    showImages($("edit-results"), body.data, "pixlm-" + kind);
    $("edit-status").textContent = `${body.data.length} image(s)`;
  } catch (e) {
    $("edit-error").textContent = e.message;
    $("edit-status").textContent = "";
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

$("edit-form").addEventListener("submit", (ev) => { ev.preventDefault(); runEdit("edit"); });
$("vary-submit").addEventListener("click", () => runEdit("variation"));

// ------------------------------------------------------------------ caption
$("caption-file").addEventListener("change", () => {
  const file = $("caption-file").files[0];
  if (!file) return;
  const preview = $("caption-preview");
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
});

$("caption-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("caption-error").textContent = "";
  $("caption-text").textContent = "";
  const file = $("caption-file").files[0];
  if (!file) {
    $("caption-error").textContent = "Choose a picture first.";
    return;
  }
  const form = new FormData();
  form.append("image", file, file.name);
  $("caption-submit").disabled = true;
  try {
    const body = await postForm("/v1/captions", form);
    $("caption-text").textContent = body.text;
  } catch (e) {
    $("caption-error").textContent = e.message;
  } finally {
    $("caption-submit").disabled = false;
  }
});
