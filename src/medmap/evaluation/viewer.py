"""A per-case viewer for a segmentation run: one HTML file, no server, that scrolls through every evaluated
case slice by slice with the prediction (filled) and the truth (outlined) in their label colours.

Three fixed slices per case (the report's figure) hide most errors; a reader checking a model wants to
scroll. The volumes travel inside the file as gzip-compressed uint8 arrays (the image already windowed),
decompressed by the browser's own ``DecompressionStream`` and drawn on a canvas; a liver test set of six
CTs makes a file of a few megabytes.
"""

from __future__ import annotations

import base64
import gzip
import html
import json
from pathlib import Path

import numpy as np

from medmap.colours import label_colour


def _packed(array: np.ndarray) -> str:
    return base64.b64encode(gzip.compress(np.ascontiguousarray(array, np.uint8).tobytes(), 6)).decode()


def _grey(image: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    if window is not None:
        low, high = window[0] - window[1] / 2, window[0] + window[1] / 2
    else:
        low, high = (float(v) for v in np.percentile(image, [1, 99]))
    return np.rint(np.clip((image.astype(np.float32) - low) / max(high - low, 1e-6), 0, 1) * 255).astype(np.uint8)


def write_viewer(
    path: str | Path,
    cases: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float, float]]],
    labels: dict[int, str],
    captions: dict[str, str],
    window: tuple[float, float] | None,
    title: str,
) -> Path:
    """``cases``: case id -> (image [Z, Y, X], truth, prediction, spacing), all on one grid per case;
    ``captions``: case id -> a line shown with it (its Dice, say); ``window``: (centre, width) or None for
    each image's 1st-99th percentiles."""
    items = []
    for case_id, (image, truth, pred, spacing) in cases.items():
        counts = (truth > 0).reshape(truth.shape[0], -1).sum(1) + (pred > 0).reshape(pred.shape[0], -1).sum(1)
        items.append(
            {
                "id": case_id,
                "caption": captions.get(case_id, ""),
                "shape": list(image.shape[:3]),
                "aspect": float(spacing[1] / spacing[2]),  # row / column spacing
                "start": int(np.argmax(counts)),
                "grey": _packed(_grey(image, window)),
                "truth": _packed(truth),
                "pred": _packed(pred),
            }
        )
    colours = {int(k): label_colour(v, int(k)) for k, v in labels.items() if int(k) != 0}
    legend = " ".join(
        f'<span style="color:rgb{tuple(c)}">&#9632;</span> {html.escape(labels[k])}' for k, c in colours.items()
    )
    page = (
        _PAGE.replace("__TITLE__", html.escape(title))
        .replace("__LEGEND__", legend)
        .replace("__COLOURS__", json.dumps(colours))
        .replace("__CASES__", json.dumps(items))
    )
    path = Path(path)
    path.write_text(page)
    return path


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>__TITLE__</title><style>
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222} canvas{image-rendering:pixelated;border:1px solid #ccc}
#controls{margin:.6em 0} input[type=range]{width:420px;vertical-align:middle} .note{color:#555;font-size:.9em}
</style></head><body><h1>__TITLE__</h1>
<p class="note">Prediction filled, truth outlined, each label in its colour: __LEGEND__. Scroll with the slider or
the arrow keys; the view opens on the slice with the most labelled voxels.</p>
<div id="controls"><select id="case"></select>
<input id="slice" type="range" min="0" value="0"> <span id="where"></span>
<label><input id="showPred" type="checkbox" checked> prediction</label>
<label><input id="showTruth" type="checkbox" checked> truth</label></div>
<div id="caption" class="note"></div><canvas id="view"></canvas>
<script>
const CASES = __CASES__, COLOURS = __COLOURS__;
const cache = {};
async function inflate(b64) {
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}
async function volumes(i) {
  if (!cache[i]) {
    const c = CASES[i];
    cache[i] = {grey: await inflate(c.grey), truth: await inflate(c.truth), pred: await inflate(c.pred)};
  }
  return cache[i];
}
const select = document.getElementById("case"), slider = document.getElementById("slice");
const canvas = document.getElementById("view"), ctx = canvas.getContext("2d");
CASES.forEach((c, i) => {
  const o = document.createElement("option"); o.value = i; o.textContent = c.id; select.append(o);
});
async function draw() {
  const i = +select.value, c = CASES[i], v = await volumes(i);
  const [Z, Y, X] = c.shape, z = +slider.value, off = z * Y * X;
  canvas.width = X; canvas.height = Y;
  const scale = Math.max(1, 512 / X);  // about 512 screen pixels wide, rows stretched by their spacing
  canvas.style.width = Math.round(X * scale) + "px"; canvas.style.height = Math.round(Y * scale * c.aspect) + "px";
  const img = ctx.createImageData(X, Y), d = img.data;
  const showPred = document.getElementById("showPred").checked;
  const showTruth = document.getElementById("showTruth").checked;
  for (let p = 0; p < Y * X; p++) {
    let r = v.grey[off + p], g = r, b = r;
    const pl = v.pred[off + p], tl = v.truth[off + p];
    if (showPred && pl && COLOURS[pl]) {
      const k = COLOURS[pl]; r = .6 * r + .4 * k[0]; g = .6 * g + .4 * k[1]; b = .6 * b + .4 * k[2];
    }
    if (showTruth && tl && COLOURS[tl]) {
      const y = Math.floor(p / X), x = p % X;
      const edge = x === 0 || y === 0 || x === X - 1 || y === Y - 1 || v.truth[off + p - 1] !== tl ||
        v.truth[off + p + 1] !== tl || v.truth[off + p - X] !== tl || v.truth[off + p + X] !== tl;
      if (edge) { [r, g, b] = COLOURS[tl]; }
    }
    d[4 * p] = r; d[4 * p + 1] = g; d[4 * p + 2] = b; d[4 * p + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  document.getElementById("where").textContent = `slice ${z + 1} of ${Z}`;
  document.getElementById("caption").textContent = c.caption;
  document.body.dataset.drawn = `${c.id}:${z}`;
}
function open(i) { const c = CASES[i]; slider.max = c.shape[0] - 1; slider.value = c.start; draw(); }
select.onchange = () => open(+select.value);
slider.oninput = draw;
document.getElementById("showPred").onchange = draw; document.getElementById("showTruth").onchange = draw;
document.addEventListener("keydown", e => {
  if (e.key === "ArrowUp" || e.key === "ArrowRight") { slider.value = +slider.value + 1; draw(); }
  if (e.key === "ArrowDown" || e.key === "ArrowLeft") { slider.value = +slider.value - 1; draw(); }
});
if (CASES.length) open(0);
</script></body></html>
"""
