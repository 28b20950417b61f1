// Runs an explainer written by `pathonnx export` (prediction and attribution in one ONNX graph)
// from Node.js, with onnxruntime-node and no pathonnx code.
//
//   node explain.mjs EXPLAINER.onnx IMAGE.png [--target N|LABEL] [--out attribution.json]
//
// Prints the prediction; writes {label, prediction, target, method, logits, shape,
// attribution} as JSON to --out (default attribution.json). Without --target the graph
// explains its own argmax. Errors are one line on stderr with exit code 2, as pathonnx's.
//
// The image becomes the model's input as in pathonnx: a PNG (pngjs gives 8 bits per channel),
// alpha over white, then the explainer's `pathonnx.preprocess` metadata (colour, scale, mean,
// std, layout), in float32: for RGB images the input equals pathonnx's bit for bit. An image
// of another size is refused, not resized.
//
// Two things onnxruntime-node cannot do are done on the file's protobuf bytes: read the
// model's metadata_props (metadataProps), and feed the optional input `target`, which it
// would drop (withTargetInput).
import { readFileSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import ort from "onnxruntime-node";
import pngjs from "pngjs";

const f32 = Math.fround; // each step rounded to float32, as numpy computes it in pathonnx

// The length-delimited fields [number, start, end, tag] of one protobuf message in
// bytes[at, end): the field's value is bytes[start, end), its tag begins at `tag`.
function* messageFields(bytes, at = 0, end = bytes.length) {
  const varint = () => {
    let value = 0;
    for (let shift = 1, byte = 0x80; byte & 0x80; shift *= 128) {
      if (at >= end) throw new Error("not an ONNX file (truncated)");
      byte = bytes[at++];
      value += (byte & 0x7f) * shift;
    }
    return value;
  };
  while (at < end) {
    const tagAt = at, tag = varint(), wire = tag % 8;
    let size = 0;
    if (wire === 0) varint();
    else if (wire === 1) size = 8;
    else if (wire === 5) size = 4;
    else if (wire === 2) size = varint();
    else throw new Error("not an ONNX file");
    if (at + size > end) throw new Error("not an ONNX file (truncated)");
    if (wire === 2) yield [Math.floor(tag / 8), at, at + size, tagAt];
    at += size;
  }
}

// The first field `number` of the message in bytes[start, end), and a string field's text.
const field = (bytes, number, start, end) =>
  [...messageFields(bytes, start, end)].find(([n]) => n === number);
const text = (bytes, found) => found && bytes.toString("utf8", found[1], found[2]);

// ModelProto.metadata_props (field 14), each a StringStringEntryProto {key = 1, value = 2}.
function metadataProps(bytes) {
  const props = {};
  for (const [number, start, end] of messageFields(bytes)) {
    if (number !== 14) continue;
    const [key, value] = [1, 2].map((n) => text(bytes, field(bytes, n, start, end)) ?? "");
    props[key] = value;
  }
  return props;
}

// The explainer with its input `target` as a plain input. Its empty default is an initializer
// of the same name (ModelProto.graph = 7, GraphProto.initializer = 5, TensorProto.name = 8),
// which makes onnxruntime list it as an overridable initializer rather than an input, and
// onnxruntime-node passes only a session's inputs to the runtime: a fed target would be
// dropped without a word. Without that initializer the target must be fed: an empty one
// asks for the argmax, as the default did.
function withTargetInput(bytes) {
  const graph = field(bytes, 7);
  if (graph === undefined) throw new Error("not an ONNX file (no graph)");
  const [, start, end, tag] = graph;
  const kept = [];
  let from = start;
  for (const [number, s, e, t] of messageFields(bytes, start, end)) {
    if (number === 5 && text(bytes, field(bytes, 8, s, e)) === "target") {
      kept.push(bytes.subarray(from, t));
      from = e;
    }
  }
  kept.push(bytes.subarray(from, end));
  const body = Buffer.concat(kept), length = [];
  for (let n = body.length; ; n = Math.floor(n / 128)) {
    length.push(n < 128 ? n : (n % 128) | 0x80);
    if (n < 128) break;
  }
  const head = Buffer.from([(7 << 3) | 2, ...length]); // field 7, length-delimited
  return Buffer.concat([bytes.subarray(0, tag), head, body, bytes.subarray(end)]);
}

// readFileSync, its error in one short line.
function read(path, what) {
  try {
    return readFileSync(path);
  } catch (err) {
    const why = err.code === "ENOENT" ? "no such file" : err.message;
    throw new Error(`${path}: cannot read ${what} (${why})`);
  }
}

// The explainer's metadata, and a session of it with `target` as a plain input.
async function openExplainer(path) {
  const bytes = read(path, "the explainer");
  try {
    return [metadataProps(bytes), await ort.InferenceSession.create(withTargetInput(bytes))];
  } catch (err) {
    throw new Error(`${path}: ${err.message}`);
  }
}

// The image as the model's input: Float32Array in the layout pathonnx.preprocess gives.
function preprocess(path, pre) {
  const bytes = read(path, "the image");
  let png; // RGBA, 8 bits per channel
  try {
    png = pngjs.PNG.sync.read(bytes);
  } catch (err) {
    throw new Error(`${path}: cannot decode the image (${err.message}); give a PNG file`);
  }
  const [H, W] = pre.size;
  if (png.height !== H || png.width !== W)
    throw new Error(`${path}: the image is ${png.height}x${png.width} but the model takes `
                    + `${H}x${W}; resize it first`);
  const color = pre.color ?? "rgb";
  if (color !== "grey" && !png.color)
    throw new Error(`${path}: the image is greyscale but the model takes 3 channels; convert `
                    + "it to RGB");
  const C = color === "grey" ? 1 : 3;
  const mean = pre.mean ?? [0], std = pre.std ?? [1], scale = f32(pre.scale ?? 1 / 255);
  const x = new Float32Array(C * H * W);
  for (let i = 0; i < H * W; i++) {
    const alpha = f32(png.data[4 * i + 3] / 255), under = f32(255 * f32(1 - alpha));
    let rgb = [0, 1, 2].map((c) => f32(f32(png.data[4 * i + c] * alpha) + under)); // over white
    if (color === "grey" && png.color) // ITU-R BT.601 luma
      rgb = [f32(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])];
    if (color === "bgr") rgb.reverse();
    for (let c = 0; c < C; c++) {
      const m = f32(mean[c % mean.length]), s = f32(std[c % std.length]);
      x[pre.layout === "NHWC" ? i * C + c : c * H * W + i] = f32(f32(f32(rgb[c] * scale) - m) / s);
    }
  }
  return x;
}

async function main() {
  const { values: opts, positionals } = parseArgs({
    allowPositionals: true,
    options: { target: { type: "string" }, out: { type: "string", default: "attribution.json" } },
  });
  if (positionals.length !== 2)
    throw new Error("usage: node explain.mjs EXPLAINER.onnx IMAGE.png [--target N|LABEL] "
                    + "[--out FILE.json]");
  const [explainerPath, imagePath] = positionals;
  if ([explainerPath, imagePath].some((p) => resolve(p) === resolve(opts.out)))
    throw new Error(`--out ${opts.out} is one of the inputs; give another file`);

  const [meta, session] = await openExplainer(explainerPath); // `target` made a plain input
  const input = session.inputNames.find((n) => n !== "target");
  if (!["logits", "attribution"].every((o) => session.outputNames.includes(o))
      || !session.inputNames.includes("target"))
    throw new Error(`${explainerPath}: not an explainer (no 'target' input, 'logits' and `
                    + "'attribution' outputs); write one with pathonnx export");
  if (!meta["pathonnx.preprocess"])
    throw new Error(`${explainerPath}: no pathonnx.preprocess metadata; set it on the model `
                    + "with pathonnx rewrite --set-preprocess, then export again");
  const labels = JSON.parse(meta["pathonnx.labels"] ?? "[]");
  const K = session.outputMetadata.find((m) => m.name === "logits").shape[1];
  const name = (k) => `${labels[k] ?? `class ${k}`} (${k})`;

  const x = preprocess(imagePath, JSON.parse(meta["pathonnx.preprocess"]));
  const shape = session.inputMetadata.find((m) => m.name === input).shape
    .map((d) => (typeof d === "number" ? d : 1)); // a batch of one
  let target = []; // empty: the graph explains its argmax
  if (opts.target !== undefined) {
    const k = /^\d+$/.test(opts.target) ? Number(opts.target) : labels.indexOf(opts.target);
    if (k < 0 || k >= K)
      throw new Error(`--target ${opts.target} is not a class; give 0..${K - 1}`
                      + (labels.length ? ` or a label (${labels.join(", ")})` : ""));
    target = [k];
  }
  const feeds = {
    [input]: new ort.Tensor("float32", x, shape),
    target: new ort.Tensor("int64", BigInt64Array.from(target, BigInt), [target.length]),
  };
  const { logits, attribution } = await session.run(feeds);

  const scores = Array.from(logits.data);
  const prediction = scores.indexOf(Math.max(...scores));
  target = target.length ? target[0] : prediction;
  const method = meta["pathonnx.export.method"] ?? "unknown";
  writeFileSync(opts.out, JSON.stringify({
    label: labels[prediction] ?? null, prediction, target, method, logits: scores,
    shape: attribution.dims, attribution: Array.from(attribution.data),
  }));
  console.log(`${imagePath}: ${name(prediction)}; ${method} of ${name(target)} -> ${opts.out}`);
}

main().catch((err) => {
  console.error(`explain.mjs: error: ${String(err.message ?? err).split("\n")[0]}`);
  process.exit(2);
});
