#!/usr/bin/env node
// Face attribute server for sfvq.scorers.attributes: one long-lived process, JSON lines over stdin/stdout.
//
// Usage: node faceapi_runner.cjs --modules DIR [--backend wasm|cpu]
//   DIR: a node_modules folder holding @vladmandic/face-api, @tensorflow/tfjs, @tensorflow/tfjs-backend-wasm
//   (installed by scripts/install-scorers.sh from the repository's package-lock.json). Models are read from
//   face-api's own model/ folder: nothing is downloaded.
//
// Protocol (one JSON object per line):
//   out, once at start:  {"ready": true, "backend": "wasm", "versions": {...}}
//   in:  {"images": [{"w": W, "h": H, "rgb": "<base64 of H*W*3 bytes, row-major RGB>"}, ...],
//         "detector": "tiny" | "ssd", "input_size": 160, "min_confidence": 0.3, "pad": 0.5}
//   out: {"ok": true, "results": [{"detected", "score", "box": [x, y, w, h], "landmarks": [[x, y] x 68],
//          "age", "gender", "gender_probability", "expressions": {name: prob}}, ...]}
//        or {"ok": false, "error": "..."} (the process keeps serving).
// For each image: face detection (TinyFaceDetector at `input_size` px, or SSD-MobileNet at 512 px, about
// 20x slower) on the image padded by `pad` x its size on every side with mid grey (generated faces are
// tight crops that touch the frame, which detectors miss); the best box, clipped to the
// image, or the whole image when nothing is found (then "detected": false, "score": null); 68 landmarks
// on that box; age, gender and expressions on the landmarks' aligned box, as face-api's own pipeline does.
// Coordinates are in pixels of the given image.
'use strict';

const path = require('path');
const readline = require('readline');

// tfjs prints advice with console.log; stdout carries the protocol only.
console.log = (...args) => console.error(...args);
console.info = (...args) => console.error(...args);
console.warn = (...args) => console.error(...args);

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

function send(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

async function main() {
  const modules = arg('--modules', null);
  const backend = arg('--backend', 'wasm');
  if (!modules) throw new Error('missing --modules DIR (a node_modules folder with @vladmandic/face-api)');
  const req = (name) => require(require.resolve(name, { paths: [modules] }));
  const faceapi = req('@vladmandic/face-api/dist/face-api.node-wasm.js');
  const { tf } = faceapi;
  if (!(await tf.setBackend(backend))) throw new Error(`tfjs backend ${backend} failed to start`);
  await tf.ready();
  const modelDir = path.join(path.dirname(require.resolve('@vladmandic/face-api/package.json', { paths: [modules] })), 'model');
  await faceapi.nets.tinyFaceDetector.loadFromDisk(modelDir);
  await faceapi.nets.faceLandmark68Net.loadFromDisk(modelDir);
  await faceapi.nets.ageGenderNet.loadFromDisk(modelDir);
  await faceapi.nets.faceExpressionNet.loadFromDisk(modelDir);
  const versions = { faceapi: faceapi.version, tfjs: tf.version_core };
  send({ ready: true, backend: tf.getBackend(), versions });

  async function detector(name) {
    if (name === 'tiny') return faceapi.nets.tinyFaceDetector;
    if (name !== 'ssd') throw new Error(`unknown detector ${name}; use "tiny" or "ssd"`);
    if (!faceapi.nets.ssdMobilenetv1.isLoaded) await faceapi.nets.ssdMobilenetv1.loadFromDisk(modelDir);
    return faceapi.nets.ssdMobilenetv1;
  }

  async function scoreOne(img, opts) {
    const { w, h } = img;
    const bytes = Buffer.from(img.rgb, 'base64');
    if (!(w > 0 && h > 0) || bytes.length !== w * h * 3) {
      throw new Error(`image ${w}x${h} needs ${w * h * 3} RGB bytes, got ${bytes.length}`);
    }
    const image = tf.tensor3d(new Int32Array(bytes), [h, w, 3], 'int32'); // (H, W, 3)
    try {
      const px = Math.round(opts.pad * w);
      const py = Math.round(opts.pad * h);
      // (H + 2py, W + 2px, 3): a grey frame so that a face touching the border looks like a face.
      const padded = tf.pad(image, [[py, py], [px, px], [0, 0]], 128);
      let found;
      try {
        const options = opts.detector === 'ssd'
          ? new faceapi.SsdMobilenetv1Options({ minConfidence: opts.minConfidence, maxResults: 5 })
          : new faceapi.TinyFaceDetectorOptions({ inputSize: opts.inputSize, scoreThreshold: opts.minConfidence });
        found = await (await detector(opts.detector)).locateFaces(padded, options);
      } finally {
        padded.dispose();
      }
      let box = new faceapi.Rect(0, 0, w, h);
      let score = null;
      if (found.length > 0) {
        const best = found.reduce((a, b) => (b.score > a.score ? b : a));
        const b = best.box;
        const x0 = Math.max(0, b.x - px);
        const y0 = Math.max(0, b.y - py);
        const x1 = Math.min(w, b.x + b.width - px);
        const y1 = Math.min(h, b.y + b.height - py);
        if (x1 - x0 >= 4 && y1 - y0 >= 4) {
          box = new faceapi.Rect(x0, y0, x1 - x0, y1 - y0);
          score = best.score;
        }
      }
      const [crop] = await faceapi.extractFaceTensors(image, [box]);
      let landmarks;
      try {
        landmarks = (await faceapi.nets.faceLandmark68Net.detectLandmarks(crop)).shiftBy(box.x, box.y);
      } finally {
        crop.dispose();
      }
      const aligned = landmarks.align(); // min box around the 68 points, padded by 20 %
      const [face] = await faceapi.extractFaceTensors(image, [aligned]);
      let ag;
      let ex;
      try {
        ag = await faceapi.nets.ageGenderNet.predictAgeAndGender(face);
        ex = await faceapi.nets.faceExpressionNet.predictExpressions(face);
      } finally {
        face.dispose();
      }
      const expressions = {};
      for (const name of faceapi.FACE_EXPRESSION_LABELS) expressions[name] = ex[name];
      return {
        detected: score !== null,
        score,
        box: [box.x, box.y, box.width, box.height],
        landmarks: landmarks.positions.map((p) => [p.x, p.y]),
        age: ag.age,
        gender: ag.gender,
        gender_probability: ag.genderProbability,
        expressions,
      };
    } finally {
      image.dispose();
    }
  }

  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity, terminal: false });
  for await (const line of rl) {
    if (!line.trim()) continue;
    try {
      const request = JSON.parse(line);
      if (!Array.isArray(request.images)) throw new Error('request needs an "images" list');
      const opts = {
        detector: request.detector ?? 'tiny',
        inputSize: request.input_size ?? 160,
        minConfidence: request.min_confidence ?? 0.3,
        pad: request.pad ?? 0.5,
      };
      if (!(opts.inputSize > 0 && opts.inputSize % 32 === 0)) throw new Error('input_size must be a multiple of 32');
      if (!(opts.pad >= 0 && opts.pad <= 4)) throw new Error('pad must be in [0, 4]');
      const results = [];
      for (const img of request.images) results.push(await scoreOne(img, opts));
      send({ ok: true, results });
    } catch (e) {
      send({ ok: false, error: String(e && e.message ? e.message : e) });
    }
  }
}

main().catch((e) => {
  process.stderr.write(`faceapi_runner: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
