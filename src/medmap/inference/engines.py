"""Execution engines: the seam between "a bundle's networks" and "a function from a batch to logits".

The predictor and the sliding window only ever call ``engine(x) -> logits`` (torch tensors in and out), so
torch eager, TorchScript and ONNX Runtime are interchangeable without a second predictor.

- ``torch``: the networks themselves (eager).
- ``torchscript``: ``torch.jit.trace`` of each network, saved as ``BUNDLE/export/model-K.torchscript.pt``.
- ``onnx``: ``BUNDLE/export/model-K.onnx`` run by ONNX Runtime (CPU provider; CUDA when asked and
  available), batch size dynamic.

`export` writes the files (``medmap export``); exports are derived files, so each carries the SHA-256 of
the weights it came from (``export/exports.json``) and a stale export is re-made rather than trusted.
Predicting never writes into the bundle (it may be read-only, and its files do not change after their
SHA-256s were written): without a current export, the networks are exported into a temporary folder
that lives as long as loading them.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from medmap.errors import ConfigError
from medmap.inference.bundle import Bundle, sha256

ENGINES = ("torch", "torchscript", "onnx")
SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}

Engine = Callable[[torch.Tensor], torch.Tensor]


def example_input(bundle: Bundle, batch: int = 1) -> torch.Tensor:
    plan = bundle.plan
    shape = plan.patch_size if plan.spatial_dims == 3 else plan.patch_size[1:]
    return torch.zeros(batch, plan.input_channels, *shape)


def _export_dir(bundle: Bundle) -> Path:
    return bundle.root / "export"


def _record(bundle: Bundle) -> dict:
    path = _export_dir(bundle) / "exports.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def export(bundle: Bundle, fmt: str, *, progress: bool = False, folder: Path | None = None) -> list[Path]:
    """Write the bundle's networks in ``fmt`` (``onnx`` or ``torchscript``) under ``BUNDLE/export/``, or
    under ``folder`` (with its own ``exports.json``)."""
    if fmt not in SUFFIX:
        raise ConfigError(f"--format {fmt}: choose onnx or torchscript")
    out = folder or _export_dir(bundle)
    out.mkdir(exist_ok=True)
    record = _record(bundle) if folder is None else {}
    paths = []
    from medmap.progress import track

    for i, (weights, model) in enumerate(
        track(list(zip(bundle.weights, bundle.networks(), strict=True)), f"exporting to {fmt}", enabled=progress)
    ):
        target = out / f"model-{i}{SUFFIX[fmt]}"
        x = example_input(bundle, batch=2)
        with torch.no_grad():
            if fmt == "torchscript":
                torch.jit.save(torch.jit.trace(model, x), target)
            else:
                _onnx_export(model, x, target)
        record[target.name] = {"weights": weights.name, "weights_sha256": sha256(weights)}
        paths.append(target)
    (out / "exports.json").write_text(json.dumps(record, indent=1))
    return paths


def _onnx_export(model: torch.nn.Module, x: torch.Tensor, target: Path) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            str(target),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )


def _fresh(bundle: Bundle, fmt: str) -> list[Path] | None:
    """The exported files when they exist and match the current weights, else None."""
    record = _record(bundle)
    paths = []
    for i, weights in enumerate(bundle.weights):
        path = _export_dir(bundle) / f"model-{i}{SUFFIX[fmt]}"
        entry = record.get(path.name)
        if not path.is_file() or not entry or entry["weights_sha256"] != sha256(weights):
            return None
        paths.append(path)
    return paths


def load_engines(
    bundle: Bundle, engine: str = "torch", device: str = "cpu", precision: str = "float32"
) -> list[Engine]:
    """One callable per fold model: ``x [B, C, *patch] -> logits`` (torch tensors, float32).

    ``precision`` is a resolved one (`medmap.inference.precision.resolve_precision`): ``bfloat16`` runs
    the torch networks under autocast.
    """
    if engine not in ENGINES:
        raise ConfigError(f"--engine {engine}: choose one of {', '.join(ENGINES)}")
    if engine == "torch":
        from medmap.inference.precision import with_precision

        return [with_precision(network, precision, device) for network in bundle.networks(device)]
    if precision != "float32":
        raise ConfigError(f"--precision {precision} runs on the torch engine, not --engine {engine}")
    paths = _fresh(bundle, engine)
    if paths:
        return _engines(paths, engine, device)
    with tempfile.TemporaryDirectory(prefix="medmap-export-") as folder:  # read into memory, then removed
        return _engines(export(bundle, engine, folder=Path(folder)), engine, device)


def _engines(paths: list[Path], engine: str, device: str) -> list[Engine]:
    if engine == "torchscript":
        return [torch.jit.load(str(p), map_location=device).eval() for p in paths]
    return [_onnx_engine(p, device) for p in paths]


def _onnx_engine(path: Path, device: str) -> Engine:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = torch.get_num_threads()  # the same CPU share as the torch engine
    providers = ["CPUExecutionProvider"]
    if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    session = ort.InferenceSession(str(path), options, providers=providers)

    def run(x: torch.Tensor) -> torch.Tensor:
        logits = session.run(["logits"], {"input": x.detach().cpu().numpy().astype("float32", copy=False)})[0]
        return torch.from_numpy(logits).to(x.device)

    return run
