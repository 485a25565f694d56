// The model repo in the browser, at parity with the Space (space/inference.py): onnx/model.onnx with
// onnxruntime-web; timm's eval transform for every crop_mode (space/preprocess.py); the calibrated head
// from model.safetensors; the three answers from config.json "ood" and ood.safetensors (space/ood.py);
// the CAM methods of space/cam.py, blended over the picture. The picture never leaves the page.
//
// Which model: ?model_id=<id>&revision=<commit> (from the Hub at ?endpoint=, default the page's
// model.json, else https://huggingface.co), or ?model=<base URL of a folder in timm's Hub layout>.
"use strict";

const CAM_METHODS = ["CAM", "Grad-CAM", "Grad-CAM++", "Layer-CAM"];
const SURE = "sure", UNSURE = "unsure", NEITHER = "neither";
ort.env.wasm.numThreads = 1;  // threads need cross-origin isolation, which a plain static host does not give
ort.env.wasm.wasmPaths = new URL(document.currentScript.dataset.ort || "node_modules/onnxruntime-web/dist/",
                                 location.href).href;

async function modelSource() {
  const params = new URLSearchParams(location.search);
  let saved = {};
  if (!params.get("model_id") && !params.get("model")) {
    const response = await fetch("model.json");  // written by training.publish_space --static
    if (response.ok) saved = await response.json();
  }
  const id = params.get("model_id") || saved.model_id;
  if (id) {
    const revision = params.get("revision") || saved.revision || "main";
    const endpoint = (params.get("endpoint") || saved.endpoint || "https://huggingface.co").replace(/\/$/, "");
    return {base: `${endpoint}/${id}/resolve/${encodeURIComponent(revision)}/`, id, revision};
  }
  const base = params.get("model") || "model/";
  return {base: new URL(base, location.href).href, id: null, revision: null};
}

async function fetchOk(url, init) {
  const response = await fetch(url, init);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response;
}

function halfToFloat(h) {
  const sign = h & 0x8000 ? -1 : 1, exponent = (h >> 10) & 0x1f, fraction = h & 0x3ff;
  if (exponent === 0) return sign * 2 ** -14 * (fraction / 1024);
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
}

function asFloat32(bytes, dtype) {
  if (dtype === "F32") return new Float32Array(bytes);
  if (dtype === "F16") return Float32Array.from(new Uint16Array(bytes), halfToFloat);
  if (dtype === "BF16") {
    const out = new Float32Array(bytes.byteLength / 2), words = new Uint32Array(out.buffer), halves = new Uint16Array(bytes);
    for (let i = 0; i < halves.length; i++) words[i] = halves[i] << 16;
    return out;
  }
  throw new Error(`tensor dtype ${dtype} is not read here (F32, F16 or BF16)`);
}

// The named tensors of a safetensors file, read with HTTP ranges where the host gives them (the Hub does), so
// the head's few kilobytes do not cost the whole model.safetensors.
async function readTensors(url, wanted) {
  const first = await fetchOk(url, {headers: {Range: "bytes=0-7"}});
  const whole = first.status === 200 ? await first.arrayBuffer() : null;
  const part = async (start, end) => whole ? whole.slice(start, end)
    : fetchOk(url, {headers: {Range: `bytes=${start}-${end - 1}`}}).then((r) => r.arrayBuffer());
  const length = Number(new DataView(whole ? whole.slice(0, 8) : await first.arrayBuffer()).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(await part(8, 8 + length)));
  const tensors = {};
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__" || (wanted && !wanted.includes(name))) continue;
    const [start, end] = info.data_offsets;
    tensors[name] = {data: asFloat32(await part(8 + length + start, 8 + length + end), info.dtype), shape: info.shape};
  }
  for (const name of wanted || []) if (!tensors[name]) throw new Error(`${url} has no tensor ${name}`);
  return tensors;
}

const model = (async () => {
  const source = await modelSource();
  const config = await (await fetchOk(source.base + "config.json")).json();
  const session = await ort.InferenceSession.create(source.base + "onnx/model.onnx", {executionProviders: ["wasm"]});
  const classifier = (config.pretrained_cfg || {}).classifier || "classifier";
  const head = await readTensors(source.base + "model.safetensors", [`${classifier}.weight`, `${classifier}.bias`]);
  const weight = head[`${classifier}.weight`], bias = head[`${classifier}.bias`];
  let ood = null;
  if (config.ood) {
    const stats = await readTensors(source.base + config.ood.statistics);
    ood = {...config.ood, stats: Object.fromEntries(Object.entries(stats).map(([k, t]) => [k, t.data])),
           shapes: Object.fromEntries(Object.entries(stats).map(([k, t]) => [k, t.shape]))};
    if (ood.method === "mahalanobis") ood.meanTerms = mahalanobisMeanTerms(ood);
  }
  const labels = config.label_names || Array.from({length: bias.data.length}, (_, i) => String(i));
  return {source, config, session, weight: weight.data, bias: bias.data, dim: weight.shape[1], labels, ood,
          camMethod: config.cam_method || "CAM"};
})();

// ---- preprocessing: timm's eval transform as space/preprocess.py reproduces it ----

const FILTERS = {  // Pillow's filters (libImaging/Resample.c): support and weight function
  bilinear: [1.0, (x) => { x = Math.abs(x); return x < 1 ? 1 - x : 0; }],
  bicubic: [2.0, (x) => {
    const a = -0.5;
    x = Math.abs(x);
    if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
    return 0;
  }],
};

// One pass of Pillow's separable resampling along one axis (libImaging/Resample.c), in its own fixed point:
// coefficients normalised, then scaled by 2^22 and rounded; each sum starts at 2^21 and is shifted back.
const PRECISION = 2 ** 22;
function resamplePass(src, width, height, outSize, horizontal, filterName, channels = 3) {
  if (!FILTERS[filterName]) throw new Error(`interpolation ${filterName} is not reproduced in the browser`);
  const [support, filter] = FILTERS[filterName];
  const inSize = horizontal ? width : height;
  const scale = inSize / outSize, filterScale = Math.max(scale, 1), reach = support * filterScale;
  const outWidth = horizontal ? outSize : width, outHeight = horizontal ? height : outSize;
  const out = new Uint8ClampedArray(outWidth * outHeight * channels);
  for (let o = 0; o < outSize; o++) {
    const center = (o + 0.5) * scale;
    const lo = Math.max(0, Math.trunc(center - reach + 0.5)), hi = Math.min(inSize, Math.trunc(center + reach + 0.5));
    const weights = [];
    let total = 0;
    for (let i = lo; i < hi; i++) { const w = filter((i - center + 0.5) / filterScale); weights.push(w); total += w; }
    const fixed = weights.map((w) => { const v = (total ? w / total : 0) * PRECISION; return Math.trunc(v < 0 ? v - 0.5 : v + 0.5); });
    const lines = horizontal ? height : width;
    for (let line = 0; line < lines; line++) {
      for (let c = 0; c < channels; c++) {
        let sum = PRECISION / 2;
        for (let k = 0; k < fixed.length; k++) {
          const at = horizontal ? (line * width + lo + k) : ((lo + k) * width + line);
          sum += fixed[k] * src[at * channels + c];
        }
        out[(horizontal ? (line * outWidth + o) : (o * outWidth + line)) * channels + c] = Math.floor(sum / PRECISION);
      }
    }
  }
  return out;
}

function resize(rgb, width, height, newWidth, newHeight, interpolation, channels = 3) {
  if (newWidth !== width) { rgb = resamplePass(rgb, width, height, newWidth, true, interpolation, channels); width = newWidth; }
  if (newHeight !== height) rgb = resamplePass(rgb, width, height, newHeight, false, interpolation, channels);
  return rgb;
}

function pixelsOf(image) {
  const canvas = document.createElement("canvas");
  canvas.width = image.naturalWidth; canvas.height = image.naturalHeight;
  const context = canvas.getContext("2d");
  context.fillStyle = "white";  // transparency over white, as the Space and training convert
  context.fillRect(0, 0, canvas.width, canvas.height);
  context.drawImage(image, 0, 0);
  const rgba = context.getImageData(0, 0, canvas.width, canvas.height).data;
  const rgb = new Uint8ClampedArray(canvas.width * canvas.height * 3);
  for (let p = 0, q = 0; p < rgba.length; p += 4, q += 3) { rgb[q] = rgba[p]; rgb[q + 1] = rgba[p + 1]; rgb[q + 2] = rgba[p + 2]; }
  return [rgb, canvas.width, canvas.height];
}

// Python's round(), which torchvision's CenterCrop uses: 66.5 -> 66, 67.5 -> 68.
function roundHalfEven(x) {
  const floor = Math.floor(x);
  return x - floor === 0.5 ? (floor % 2 === 0 ? floor : floor + 1) : Math.round(x);
}

function preprocess(image, pretrained) {
  const cfg = {crop_pct: 0.875, interpolation: "bilinear", crop_mode: "center", mean: [0.485, 0.456, 0.406],
               std: [0.229, 0.224, 0.225], ...Object.fromEntries(Object.entries(pretrained).filter(([, v]) => v != null))};
  const [height, width] = cfg.input_size.slice(-2).map(Number);
  if (!["center", "squash"].includes(cfg.crop_mode)) throw new Error(`crop_mode ${cfg.crop_mode} is not reproduced in the browser`);
  if (cfg.crop_mode === "center" && height !== width) throw new Error("a non-square input with crop_mode center is not reproduced");
  let [rgb, w, h] = pixelsOf(image);
  const scale = [Math.floor(height / cfg.crop_pct), Math.floor(width / cfg.crop_pct)];
  let newWidth, newHeight;
  if (cfg.crop_mode === "squash") [newWidth, newHeight] = [scale[1], scale[0]];
  else [newWidth, newHeight] = w <= h ? [scale[0], Math.trunc(scale[0] * h / w)] : [Math.trunc(scale[0] * w / h), scale[0]];
  rgb = resize(rgb, w, h, newWidth, newHeight, cfg.interpolation);
  [w, h] = [newWidth, newHeight];
  // torchvision's CenterCrop: zero padding where the picture is smaller, then the middle
  const padLeft = width > w || height > h ? Math.max(0, Math.floor((width - w) / 2)) : 0;
  const padTop = width > w || height > h ? Math.max(0, Math.floor((height - h) / 2)) : 0;
  const top = roundHalfEven((Math.max(height, h) - height) / 2) - padTop;
  const left = roundHalfEven((Math.max(width, w) - width) / 2) - padLeft;
  const data = new Float32Array(3 * height * width);
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const sy = top + y, sx = left + x;
        const value = sy >= 0 && sy < h && sx >= 0 && sx < w ? rgb[(sy * w + sx) * 3 + c] / 255 : 0;
        data[(c * height + y) * width + x] = (value - cfg.mean[c]) / cfg.std[c];
      }
    }
  }
  return new ort.Tensor("float32", data, [1, 3, height, width]);
}

// ---- the answer: space/inference.py's Classifier.decide and space/ood.py ----

function softmax(logits) {
  const top = Math.max(...logits), exps = logits.map((l) => Math.exp(l - top)), total = exps.reduce((a, b) => a + b, 0);
  return exps.map((e) => e / total);
}

function mahalanobisMeanTerms(ood) {
  const means = ood.stats.class_means, precision = ood.stats.precision, [classes, dim] = ood.shapes.class_means;
  return Array.from({length: classes}, (_, c) => {
    let total = 0;
    for (let i = 0; i < dim; i++) {
      let row = 0;
      for (let j = 0; j < dim; j++) row += means[c * dim + j] * precision[j * dim + i];
      total += row * means[c * dim + i];
    }
    return total;
  });
}

function oodScore(ood, features, logits) {
  const dim = features.length;
  if (ood.method === "msp") return 1 - Math.max(...softmax(logits));
  if (ood.method === "energy") {
    const top = Math.max(...logits);
    return -(top + Math.log(logits.reduce((s, l) => s + Math.exp(l - top), 0)));
  }
  if (ood.method === "mahalanobis") {
    const means = ood.stats.class_means, precision = ood.stats.precision, classes = ood.shapes.class_means[0];
    const projected = new Float64Array(dim);
    for (let i = 0; i < dim; i++) for (let j = 0; j < dim; j++) projected[j] += features[i] * precision[i * dim + j];
    let self = 0;
    for (let j = 0; j < dim; j++) self += projected[j] * features[j];
    let best = Infinity;
    for (let c = 0; c < classes; c++) {
      let cross = 0;
      for (let j = 0; j < dim; j++) cross += projected[j] * means[c * dim + j];
      best = Math.min(best, self - 2 * cross + ood.meanTerms[c]);
    }
    return best;
  }
  if (ood.method === "knn") {
    const bank = ood.stats.bank, rows = ood.shapes.bank[0];
    const norm = Math.max(Math.hypot(...features), 1e-12);
    const similarities = new Float64Array(rows);
    for (let r = 0; r < rows; r++) {
      let dot = 0;
      for (let j = 0; j < dim; j++) dot += bank[r * dim + j] * features[j];
      similarities[r] = dot / norm;
    }
    similarities.sort();
    return 1 - similarities[rows - Math.min(ood.k || 5, rows)];
  }
  throw new Error(`unknown OOD method ${ood.method}`);
}

function verdictOf(score, unsureThreshold, threshold) {
  if (score > threshold) return NEITHER;
  return unsureThreshold != null && score > unsureThreshold ? UNSURE : SURE;
}

// ---- heatmaps: space/cam.py ----

function camMap(featureMap, [channels, h, w], weightRow, method) {
  const area = h * w;
  let weights;
  if (method === "CAM") weights = weightRow;
  else {
    const g = weightRow.map((v) => v / area);
    if (method === "Grad-CAM") weights = g;
    else if (method === "Layer-CAM") weights = g.map((v) => Math.max(v, 0));
    else if (method === "Grad-CAM++") {
      weights = g.map((gc, c) => {
        let sum = 0;
        for (let p = 0; p < area; p++) sum += featureMap[c * area + p];
        const alpha = gc ** 2 / (2 * gc ** 2 + sum * gc ** 3 + 1e-6);
        return (gc !== 0 ? alpha : 0) * Math.max(gc, 0) * area;
      });
    } else throw new Error(`unknown CAM method ${method}; choose from ${CAM_METHODS.join(", ")}`);
  }
  const cam = new Float32Array(area);
  for (let c = 0; c < channels; c++) for (let p = 0; p < area; p++) cam[p] += weights[c] * featureMap[c * area + p];
  for (let p = 0; p < area; p++) cam[p] = Math.max(cam[p], 0);
  const low = Math.min(...cam), span = Math.max(...cam) - low;
  return Array.from(cam, (v) => (span > 0 ? (v - low) / span : 0));
}

function jet(v) {  // matplotlib's 'jet' at v in [0, 1], as space/cam.py's palette
  const segments = [[[0, 0], [0.35, 0], [0.66, 1], [0.89, 1], [1, 0.5]],
                    [[0, 0], [0.125, 0], [0.375, 1], [0.64, 1], [0.91, 0], [1, 0]],
                    [[0, 0.5], [0.11, 1], [0.34, 1], [0.65, 0], [1, 0]]];
  return segments.map((points) => {
    for (let i = 1; i < points.length; i++) {
      const [x0, y0] = points[i - 1], [x1, y1] = points[i];
      if (v <= x1) return Math.round(255 * (y0 + (y1 - y0) * (v - x0) / (x1 - x0)));
    }
    return Math.round(255 * points[points.length - 1][1]);
  });
}

const JET = Array.from({length: 256}, (_, i) => jet(i / 255));  // the 256 colours, made once

function drawHeatmap(canvas, image, cam, [h, w], opacity) {
  canvas.width = image.naturalWidth; canvas.height = image.naturalHeight;
  const context = canvas.getContext("2d");
  context.drawImage(image, 0, 0);
  const small = new Uint8ClampedArray(cam.map((v) => Math.trunc(v * 255)));
  const big = resize(small, w, h, canvas.width, canvas.height, "bilinear", 1);  // as the Space's PIL resize
  const picture = context.getImageData(0, 0, canvas.width, canvas.height);
  for (let p = 0; p < big.length; p++) {
    const colour = JET[big[p]];
    for (let c = 0; c < 3; c++) {
      const base = picture.data[p * 4 + c];
      picture.data[p * 4 + c] = base + opacity * (colour[c] - base);
    }
  }
  context.putImageData(picture, 0, 0);
}

// ---- one picture ----

function withArticle(name) { return `${"aeiou".includes(name[0].toLowerCase()) ? "an" : "a"} ${name}`; }

function headline(answer, labels) {
  if (answer.verdict === NEITHER) {
    return labels.length === 2 ? `Neither ${withArticle(labels[0])} nor ${withArticle(labels[1])}`
                               : `None of the ${labels.length} classes`;
  }
  if (answer.verdict === UNSURE) {
    const top = Object.keys(answer.probabilities).reduce((a, b) => (answer.probabilities[a] >= answer.probabilities[b] ? a : b));
    return `Not sure: looks most like ${withArticle(top)} (${Math.round(100 * answer.probabilities[top])}%), but unlike the training pictures`;
  }
  return answer.label;
}

// One forward pass per picture (space/inference.py's Classifier.explain): the answer, and the feature map every
// heatmap method reads, so changing the method or the opacity runs no model again.
async function explain(image) {
  const m = await model;
  const outputs = await m.session.run({pixel_values: preprocess(image, m.config.pretrained_cfg || {})});
  const features = Array.from(outputs.features.data);
  const logits = Array.from(m.bias, (b, c) => {
    let sum = b;
    for (let j = 0; j < m.dim; j++) sum += m.weight[c * m.dim + j] * features[j];
    return sum;
  });
  const probs = softmax(logits);
  const top = probs.indexOf(Math.max(...probs));
  const score = m.ood ? oodScore(m.ood, features, logits) : null;
  const verdict = m.ood ? verdictOf(score, m.ood.unsure_threshold, m.ood.threshold) : SURE;
  const answer = {
    label: verdict === NEITHER ? NEITHER : m.labels[top], verdict,
    probabilities: Object.fromEntries(m.labels.map((name, i) => [name, probs[i]])),
    ood_score: score, unsure_threshold: m.ood ? m.ood.unsure_threshold ?? null : null,
    threshold: m.ood ? m.ood.threshold : null,
  };
  answer.headline = headline(answer, m.labels);
  return {answer, top, featureMap: outputs.feature_map.data, shape: outputs.feature_map.dims.slice(1)};
}

// The top class's heatmap under ``method`` (the model's own default when none is given).
function heatmap(m, explained, method) {
  const {top, featureMap, shape} = explained;
  const chosen = method || m.camMethod;
  const row = m.weight.subarray(top * m.dim, (top + 1) * m.dim);
  return {cam_method: chosen, cam: {shape: shape.slice(1), data: camMap(featureMap, shape, row, chosen)}};
}

async function classify(image, method) {
  const explained = await explain(image);
  return {...explained.answer, ...heatmap(await model, explained, method)};
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("not an image the browser can decode"));
    image.src = url;
  });
}

async function classifyUrl(url, method) {
  return classify(await loadImage(url), method);
}

// ---- the page ----

const $ = (id) => document.getElementById(id);
let shown = null;  // the picture on the page and its forward pass, redrawn when the method or the opacity changes

async function show() {
  if (!shown) return;
  try {
    shown.explained = shown.explained || await explain(shown.image);
    const {answer} = shown.explained;
    const {cam} = heatmap(await model, shown.explained, $("method").value);
    $("answer").textContent = answer.headline;
    $("verdict").textContent = answer.verdict;
    $("probabilities").textContent = Object.entries(answer.probabilities)
      .sort((a, b) => b[1] - a[1]).map(([name, p]) => `${name}: ${(100 * p).toFixed(1)} %`).join("\n");
    drawHeatmap($("heatmap"), shown.image, cam.data, cam.shape, Number($("opacity").value));
    $("error").textContent = "";
  } catch (error) {  // said on the page, never swallowed
    $("error").textContent = `${shown.name}: ${error.message || error}`;
  }
}

$("file").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  const url = URL.createObjectURL(file);
  try {
    shown = {name: file.name, image: await loadImage(url)};
    await show();
  } catch (error) {  // the previous picture's answer goes: it is not this file's
    shown = null;
    for (const id of ["answer", "verdict", "probabilities"]) $(id).textContent = "";
    $("heatmap").width = 0;
    $("error").textContent = `${file.name}: ${error.message || error}`;
  } finally {
    URL.revokeObjectURL(url);
  }
});
$("method").addEventListener("change", show);
$("opacity").addEventListener("change", show);

model.then((m) => {
  $("model").textContent = m.source.id ? `${m.source.id} at revision ${m.source.revision}` : m.source.base;
  for (const method of CAM_METHODS) $("method").add(new Option(method, method, false, method === m.camMethod));
  $("answer").textContent = "ready: choose a picture";
}, (error) => { $("error").textContent = "the model did not load: " + (error.message || error); });
