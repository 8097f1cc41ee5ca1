"""RTSTRUCT to label map: medmap beside rt-utils, on analytic shapes with exact masks and on a real CT.

    python benchmarks/label_objects.py --setup          # rt-utils in its own environment (.bench/rtutils)
    python benchmarks/label_objects.py                  # conformance table + LUNG1-001 timing and agreement
    python benchmarks/label_objects.py --quick          # two shapes, no real data (the test suite)

Conformance (RTMaskConformanceTest's thresholds): Dice >= 0.95, HD95 <= 2 mm, volume error <= 3 %
against the exact mask (voxel centres inside the analytic shape). rt-utils runs as its own docs show
(``RTStructBuilder.create_from(dicom_series_path, rt_struct_path)``, ``get_roi_mask_by_name``) in a
separate environment, never a medmap dependency; its masks (rows, columns, slices, slices sorted along
the normal) are transposed to medmap's (slice, row, column). The real-data timing runs each tool in a
fresh process from files to masks of every ROI, series loading included, median of ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
RTUTILS = ROOT / ".bench" / "rtutils"
REAL = ROOT.parent / "shared" / "data" / "real" / "nsclc_lung1_001"
THRESHOLDS = {"dice": 0.95, "hd95_mm": 2.0, "volume_error": 0.03}

RTUTILS_SCRIPT = """
import sys, time, json, numpy as np
t = time.perf_counter()
from rt_utils import RTStructBuilder
rt = RTStructBuilder.create_from(dicom_series_path=sys.argv[1], rt_struct_path=sys.argv[2])
names = rt.get_roi_names()
masks = {n: rt.get_roi_mask_by_name(n).transpose(2, 0, 1) for n in names}
seconds = time.perf_counter() - t
np.savez_compressed(sys.argv[3], **{f"roi{i}": m for i, m in enumerate(masks.values())})
print(json.dumps({"names": names, "seconds": seconds}))
"""

MEDMAP_SCRIPT = """
import sys, time, json, warnings, numpy as np
warnings.simplefilter("ignore")
t = time.perf_counter()
from medmap.io.load import load
from medmap.io.labels.rtstruct import read_rtstruct, rasterise
image = load(sys.argv[1])
structures = read_rtstruct(sys.argv[2])
masks = {s.name: rasterise(s, image) for s in structures.structures if s.contours}
seconds = time.perf_counter() - t
np.savez_compressed(sys.argv[3], **{f"roi{i}": m for i, m in enumerate(masks.values())})
print(json.dumps({"names": list(masks), "seconds": seconds}))
"""


def setup() -> None:
    subprocess.run([sys.executable, "-m", "venv", str(RTUTILS)], check=True)
    subprocess.run([str(RTUTILS / "bin" / "pip"), "install", "--quiet", "rt-utils"], check=True)


def _run(python: str, script: str, series: Path, rtstruct: Path, out: Path) -> tuple[dict, dict[str, np.ndarray]]:
    done = subprocess.run([python, "-c", script, str(series), str(rtstruct), str(out)], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed")
    info = json.loads(done.stdout.strip().splitlines()[-1])
    with np.load(out) as npz:
        masks = {name: npz[f"roi{i}"].astype(bool) for i, name in enumerate(info["names"])}
    return info, masks


def _scores(mask: np.ndarray, exact: np.ndarray, spacing) -> dict:
    from medmap.evaluation.segmentation import class_metrics

    m = class_metrics(mask, exact, spacing, tolerance_mm=1.0)
    volume_error = abs(int(mask.sum()) - int(exact.sum())) / max(int(exact.sum()), 1)
    scores = {"dice": m["dice"], "hd95_mm": m["hd95_mm"], "volume_error": volume_error}
    scores["passes"] = bool(
        scores["dice"] >= THRESHOLDS["dice"]
        and scores["hd95_mm"] <= THRESHOLDS["hd95_mm"]
        and volume_error <= THRESHOLDS["volume_error"]
    )
    return scores


def conformance(cases: list[str], work: Path, with_rtutils: bool) -> list[dict]:
    from tests.builders import write_rtstruct
    from tests.rtstruct_shapes import CASES, analytic_shape, ct_grid, write_grid_series

    from medmap.io.labels.rtstruct import label_map, read_rtstruct
    from medmap.io.load import load

    rows = []
    for case in cases:
        kind, direction, references = CASES[case]
        folder = work / case.replace(" ", "_")
        folder.mkdir(parents=True)
        grid = ct_grid(direction)
        paths = write_grid_series(folder, grid)
        contours, exact = analytic_shape(kind, grid)
        rt = write_rtstruct(paths, {kind: contours}, folder / "rt.dcm", image_references=references)
        image = load(folder / "ct")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            labels, _ = label_map(read_rtstruct(rt), image, {kind: 1})
        row = {"case": case, "medmap": _scores(labels.array == 1, exact, image.spacing)}
        if with_rtutils:
            try:
                _, masks = _run(str(RTUTILS / "bin" / "python"), RTUTILS_SCRIPT, folder / "ct", rt, folder / "r.npz")
                row["rt-utils"] = _scores(masks[kind], exact, image.spacing)
            except RuntimeError as exc:
                row["rt-utils"] = {"error": str(exc)[:200]}
        rows.append(row)
    return rows


def real_ct(work: Path, repeats: int, with_rtutils: bool) -> dict | None:
    if not REAL.is_dir():
        return None
    series, rt = REAL / "image", next((REAL / "mask_rtstruct").glob("*.dcm"))
    tools = {"medmap": (sys.executable, MEDMAP_SCRIPT)}
    if with_rtutils:
        tools["rt-utils"] = (str(RTUTILS / "bin" / "python"), RTUTILS_SCRIPT)
    out: dict = {"series": str(series.relative_to(REAL.parent)), "timing_s": {}, "masks": {}}
    for _ in range(repeats):
        for tool, (python, script) in tools.items():
            info, masks = _run(python, script, series, rt, work / f"{tool}.npz")
            out["timing_s"].setdefault(tool, []).append(info["seconds"])
            out["masks"][tool] = masks
    for tool in tools:
        out["timing_s"][tool] = float(np.median(out["timing_s"][tool]))
    if with_rtutils:
        mine, theirs = out["masks"]["medmap"], out["masks"]["rt-utils"]
        out["agreement_dice"] = {
            n: float(2 * (mine[n] & theirs[n]).sum() / max(mine[n].sum() + theirs[n].sum(), 1))
            for n in mine
            if n in theirs
        }
        out["rtutils_over_medmap"] = out["timing_s"]["rt-utils"] / out["timing_s"]["medmap"]
    out["voxels"] = {n: int(m.sum()) for n, m in out["masks"]["medmap"].items()}
    del out["masks"]
    return out


def _cell(scores: dict) -> str:
    if "error" in scores:
        return f"error: {scores['error'][:60]}"
    mark = "pass" if scores["passes"] else "**fail**"
    return f"{scores['dice']:.3f} / {scores['hd95_mm']:.2f} / {100 * scores['volume_error']:.1f} % ({mark})"


def table(rows: list[dict]) -> str:
    tools = [t for t in ("medmap", "rt-utils") if any(t in r for r in rows)]
    lines = ["| case | " + " | ".join(f"{t}: Dice / HD95 mm / volume error" for t in tools) + " |",
             "|---|" + "---|" * len(tools)]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['case']} | " + " | ".join(_cell(r[t]) if t in r else "-" for t in tools) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from tests.rtstruct_shapes import CASES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", action="store_true", help="install rt-utils into .bench/rtutils and stop")
    parser.add_argument("--quick", action="store_true", help="two shapes, no real data")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.setup:
        setup()
        return 0
    with_rtutils = (RTUTILS / "bin" / "python").exists()
    if not with_rtutils:
        print("rt-utils: not set up (python benchmarks/label_objects.py --setup); medmap alone")
    cases = ["sphere", "ring with a hole"] if args.quick else list(CASES)
    with tempfile.TemporaryDirectory() as tmp:
        rows = conformance(cases, Path(tmp) / "shapes", with_rtutils)
        real = None if args.quick else real_ct(Path(tmp), args.repeats, with_rtutils)
    print(table(rows))
    if real is None and not args.quick:
        print(f"real CT: {REAL} not found; skipped")
    elif real:
        print(f"\nLUNG1-001 ({len(real['voxels'])} ROIs), files to masks, median of {args.repeats} fresh processes:")
        for tool, seconds in real["timing_s"].items():
            print(f"  {tool}: {seconds:.2f} s")
        if "rtutils_over_medmap" in real:
            print(f"  rt-utils / medmap: {real['rtutils_over_medmap']:.2f}x")
            print(
                "  agreement (Dice medmap vs rt-utils): "
                + ", ".join(f"{n} {d:.3f}" for n, d in real["agreement_dice"].items())
            )
    payload = {"date": time.strftime("%Y-%m-%d"), "quick": args.quick, "conformance": rows, "real": real}
    if args.json:
        args.json.write_text(json.dumps(payload, indent=1))
    return 0 if all(r["medmap"]["passes"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
