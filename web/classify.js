// The model repo's onnx/model.onnx and config.json (from ?model=<base URL>, default ./model/) with
// timm's eval transform written out: the shorter side resized to input_size / crop_pct with Pillow's
// bicubic (or bilinear) filter, the centre crop, / 255, (x - mean) / std. Answers the top class and the
// calibrated probabilities (the temperature is folded into the graph's head).
"use strict";

const base = new URLSearchParams(location.search).get("model") || "model/";
ort.env.wasm.numThreads = 1;  // threads need cross-origin isolation, which a plain static host does not give
ort.env.wasm.wasmPaths = new URL("node_modules/onnxruntime-web/dist/", location.href).href;

const model = (async () => {
  const config = await (await fetch(base + "config.json")).json();
  const session = await ort.InferenceSession.create(base + "onnx/model.onnx", {executionProviders: ["wasm"]});
  return {config, session};
})();

// Pillow's filters (libImaging/Resample.c): support and weight function.
const FILTERS = {
  bilinear: [1.0, (x) => { x = Math.abs(x); return x < 1 ? 1 - x : 0; }],
  bicubic: [2.0, (x) => {
    const a = -0.5;
    x = Math.abs(x);
    if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
    return 0;
  }],
};

// One pass of Pillow's separable resampling along one axis, rounded to 8 bits as Pillow does.
function resamplePass(src, width, height, outSize, horizontal, filterName) {
  const [support, filter] = FILTERS[filterName] || FILTERS.bicubic;
  const inSize = horizontal ? width : height;
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const reach = support * filterScale;
  const outWidth = horizontal ? outSize : width, outHeight = horizontal ? height : outSize;
  const out = new Uint8ClampedArray(outWidth * outHeight * 3);
  for (let o = 0; o < outSize; o++) {
    const center = (o + 0.5) * scale;
    const lo = Math.max(0, Math.trunc(center - reach + 0.5)), hi = Math.min(inSize, Math.trunc(center + reach + 0.5));
    const weights = [];
    let total = 0;
    for (let i = lo; i < hi; i++) { const w = filter((i - center + 0.5) / filterScale); weights.push(w); total += w; }
    for (let k = 0; k < weights.length; k++) weights[k] /= total;
    const lines = horizontal ? height : width;
    for (let line = 0; line < lines; line++) {
      for (let c = 0; c < 3; c++) {
        let sum = 0;
        for (let k = 0; k < weights.length; k++) {
          const i = lo + k;
          const at = horizontal ? (line * width + i) : (i * width + line);
          sum += weights[k] * src[at * 3 + c];
        }
        const to = horizontal ? (line * outWidth + o) : (o * outWidth + line);
        out[to * 3 + c] = Math.round(sum);
      }
    }
  }
  return out;
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

function preprocess(image, cfg) {
  let [rgb, width, height] = pixelsOf(image);
  const size = cfg.input_size[cfg.input_size.length - 1];
  const scale = Math.floor(size / (cfg.crop_pct ?? 0.875));
  const [newWidth, newHeight] = width <= height ? [scale, Math.trunc(scale * height / width)]
                                                : [Math.trunc(scale * width / height), scale];
  const interpolation = cfg.interpolation || "bilinear";
  if (newWidth !== width) { rgb = resamplePass(rgb, width, height, newWidth, true, interpolation); width = newWidth; }
  if (newHeight !== height) { rgb = resamplePass(rgb, width, height, newHeight, false, interpolation); height = newHeight; }
  const top = roundHalfEven((height - size) / 2), left = roundHalfEven((width - size) / 2);
  const data = new Float32Array(3 * size * size);
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const value = rgb[((top + y) * width + (left + x)) * 3 + c] / 255;
        data[(c * size + y) * size + x] = (value - cfg.mean[c]) / cfg.std[c];
      }
    }
  }
  return new ort.Tensor("float32", data, [1, 3, size, size]);
}

async function classify(image) {
  const {config, session} = await model;
  const outputs = await session.run({pixel_values: preprocess(image, config.pretrained_cfg)});
  const logits = Array.from(outputs.logits.data);
  const top = Math.max(...logits);
  const exps = logits.map((l) => Math.exp(l - top));
  const total = exps.reduce((a, b) => a + b, 0);
  const probabilities = Object.fromEntries(config.label_names.map((name, i) => [name, exps[i] / total]));
  const label = config.label_names[logits.indexOf(top)];
  return {label, probabilities};
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("not an image the browser can decode"));
    image.src = url;
  });
}

async function classifyUrl(url) {
  return classify(await loadImage(url));
}

document.getElementById("file").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  const url = URL.createObjectURL(file);
  try {
    const answer = await classify(await loadImage(url));
    document.getElementById("answer").textContent = answer.label;
    document.getElementById("probabilities").textContent = JSON.stringify(answer.probabilities, null, 2);
  } catch (error) {  // said on the page, never swallowed
    document.getElementById("answer").textContent = `${file.name}: ${error.message || error}`;
    document.getElementById("probabilities").textContent = "";
  } finally {
    URL.revokeObjectURL(url);
  }
});
model.then(() => { document.getElementById("answer").textContent = "ready: choose a picture"; },
           (error) => { document.getElementById("answer").textContent = "the model did not load: " + error; });
