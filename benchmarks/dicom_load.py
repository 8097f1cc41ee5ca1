"""Loading a CT series: medmap vs SimpleITK, dcm2niix (+ nibabel) and a naive pydicom loop, side by side.

    python benchmarks/dicom_load.py                  # 512x512x300, the figures in docs/benchmarks.md
    python benchmarks/dicom_load.py --slices 60      # quicker

Three measurements per loader:
- warm: inside this process, after one warm-up (files in the page cache), median of --repeats runs;
- process: a fresh Python process that imports its libraries and loads (what a CLI call costs);
- peak memory: in that fresh process, the growth of its peak resident memory (VmHWM) caused by the
  load, or dcm2niix's own peak, whichever is larger; also as a multiple of medmap's output array.
Ratios are against medmap. Results are printed as a table and written as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

LOADERS = ("medmap", "simpleitk", "dcm2niix+nibabel", "pydicom loop")


# --- the loaders, each as a user of that tool would write it -------------------------------------------------
def load_medmap(folder: Path) -> np.ndarray:
    import medmap

    return medmap.load(folder).array


_KEEP_ALIVE: list = []


def load_simpleitk(folder: Path) -> np.ndarray:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    _KEEP_ALIVE[:] = [image]  # the view below points into the image's buffer
    return sitk.GetArrayViewFromImage(image)  # a view: no extra copy charged to SimpleITK


def load_dcm2niix(folder: Path) -> np.ndarray:
    import nibabel as nib

    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            ["dcm2niix", "-z", "n", "-b", "n", "-f", "vol", "-o", out, str(folder)], check=True, capture_output=True
        )
        return np.asarray(nib.load(Path(out) / "vol.nii").dataobj)


def load_pydicom_loop(folder: Path) -> np.ndarray:
    import pydicom

    datasets = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    normal = np.cross(*np.reshape(np.asarray(datasets[0].ImageOrientationPatient, dtype=float), (2, 3)))
    datasets.sort(key=lambda ds: float(np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=float))))
    return np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in datasets])


FUNCS = {
    "medmap": load_medmap,
    "simpleitk": load_simpleitk,
    "dcm2niix+nibabel": load_dcm2niix,
    "pydicom loop": load_pydicom_loop,
}
IMPORTS = {
    "medmap": "medmap.io.dicom",
    "simpleitk": "SimpleITK",
    "dcm2niix+nibabel": "nibabel",
    "pydicom loop": "pydicom",
}


def high_water_kb(pid: int | str = "self") -> int:
    """VmHWM: peak resident memory of a process. Unlike ru_maxrss it restarts at exec, so a fresh
    worker is not charged with its parent's memory."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _watch_children(stop: threading.Event, peaks: dict) -> None:
    """Follow dcm2niix's peak memory while it runs (it is a separate program)."""
    me = os.getpid()
    while not stop.is_set():
        for child in Path(f"/proc/{me}/task/{me}/children").read_text().split():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                peaks[child] = max(peaks.get(child, 0), high_water_kb(child))
        time.sleep(0.002)


def worker(name: str, folder: Path) -> None:
    """Run one loader in this (fresh) process and print what it cost."""
    __import__(IMPORTS[name])
    before = high_water_kb()
    stop, peaks = threading.Event(), {}
    watcher = threading.Thread(target=_watch_children, args=(stop, peaks), daemon=True)
    watcher.start()
    t0 = time.perf_counter()
    arr = FUNCS[name](folder)
    seconds = time.perf_counter() - t0
    stop.set()
    watcher.join()
    peak = max(high_water_kb() - before, *peaks.values(), 0)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_kb": peak,
                "nbytes": int(arr.nbytes),
                "dtype": str(arr.dtype),
                "shape": list(arr.shape),
            }
        )
    )


def make_series(folder: Path, slices: int, size: int) -> None:
    from medmap.data.phantoms import chest_ct
    from medmap.io.dicom.writer import write_series

    img = chest_ct((slices, size, size), (1.0, 0.7, 0.7), seed=1, n_nodules=5).image
    write_series(img, folder, progress=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--quick", action="store_true", help="a small run that proves the benchmark works (tests)")
    parser.add_argument("--worker", nargs=2, metavar=("LOADER", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.slices, args.size, args.repeats = 12, 96, 1
    if args.worker:
        worker(args.worker[0], Path(args.worker[1]))
        return

    args.out.mkdir(parents=True, exist_ok=True)
    folder = args.out / f"ct_{args.size}x{args.size}x{args.slices}"
    if not folder.exists() or len(list(folder.iterdir())) != args.slices:
        shutil.rmtree(folder, ignore_errors=True)
        make_series(folder, args.slices, args.size)
    available = [n for n in LOADERS if n != "dcm2niix+nibabel" or shutil.which("dcm2niix")]

    reference = load_medmap(folder)
    results: dict[str, dict] = {}
    checks = {}
    for name in available:
        arr = FUNCS[name](folder)  # warm-up, and a check that every loader reads the same voxels
        same = arr.shape == reference.shape and np.array_equal(np.asarray(arr, dtype=np.float64), reference)
        flipped = arr.shape == reference.shape[::-1]  # dcm2niix/nibabel: (x, y, z), possibly flipped rows
        checks[name] = (same, flipped)
        del arr
    # Interleaved rounds (every loader once per round), so that a slow spell of the shared machine hits
    # every loader alike; the ratio is the median of the per-round ratios to medmap.
    rounds: dict[str, list[float]] = {name: [] for name in available}
    for _ in range(args.repeats):
        for name in available:
            t0 = time.perf_counter()
            FUNCS[name](folder)
            rounds[name].append(time.perf_counter() - t0)
    for name in available:
        same, flipped = checks[name]
        times = rounds[name]
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", name, str(folder)], capture_output=True, text=True, check=True
        )
        process_seconds = time.perf_counter() - t0
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        results[name] = {
            "warm_ratio": statistics.median(t / m for t, m in zip(times, rounds["medmap"], strict=True)),
            "warm_s": statistics.median(times),
            "process_s": process_seconds,
            "peak_mb": report["peak_kb"] / 1024,
            "output_mb": report["nbytes"] / 2**20,
            "dtype": report["dtype"],
            "same_voxels_as_medmap": bool(same),
            "axis_order": "x,y,z" if flipped else "z,y,x",
        }

    base = results["medmap"]
    print(
        f"\nLoading a {args.size}x{args.size}x{args.slices} CT series (uncompressed, {args.slices} files); "
        f"ratios = loader / medmap (higher is slower for medmap's rivals)\n"
    )
    header = (
        f"{'loader':18} {'warm s':>8} {'x medmap':>9} {'process s':>10} {'x medmap':>9} "
        f"{'peak MB':>8} {'peak/output':>12} {'dtype':>8} {'same voxels':>12}"
    )
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        same = "yes" if r["same_voxels_as_medmap"] else f"no ({r['axis_order']})"
        print(
            f"{name:18} {r['warm_s']:8.3f} {r['warm_ratio']:9.2f} {r['process_s']:10.3f} "
            f"{r['process_s'] / base['process_s']:9.2f} {r['peak_mb']:8.0f} "
            f"{r['peak_mb'] / base['output_mb']:12.2f} {r['dtype']:>8} {same:>12}"
        )
    print(f"\nmedmap output array: {base['output_mb']:.0f} MB ({base['dtype']}); peak/output is relative to it.")
    payload = {"series": {"size": args.size, "slices": args.slices}, "repeats": args.repeats, "results": results}
    (args.out / "dicom_load.json").write_text(json.dumps(payload, indent=2))
    print(f"JSON: {args.out / 'dicom_load.json'}")


if __name__ == "__main__":
    main()
