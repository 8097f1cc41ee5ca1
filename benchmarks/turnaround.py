"""The DICOM node end to end: how long from the last C-STORE of a series to its SEG stored in the PACS,
next to the bundle's own inference time on the same series; and how many instances per second the node
takes in over 20 concurrent associations, with none lost.

    python benchmarks/turnaround.py --bundle demo-output/bundles/liver      # after make demo

Peers are real and local: an Orthanc started here (own storage, 127.0.0.1) as the PACS, dcmtk's storescu
as the modality, `medmap serve` as the node. Results as a table and JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.integration.test_node import NodeProcess, Orthanc, free_port, wait_for


def make_series(folder: Path, bundle: Path, slices: int | None, seed: int = 0) -> str:
    """A series within the bundle's intended use, so that the node answers it (a foreign one is refused in
    milliseconds and would measure nothing): for a CT bundle the abdominal phantom with ``slices`` slices
    (default: 300 mm of body) at the middle of the training images' spacings and their in-plane field of
    view; for any other modality (the
    test suite's MR ball model) a ball volume like its training cases."""
    import numpy as np
    from tests.builders import ball_case

    from medmap.data.phantoms import abdomen_ct
    from medmap.inference.bundle import load_bundle
    from medmap.io.dicom.writer import SeriesInfo, write_series

    loaded = load_bundle(bundle)
    use, modality = loaded.intended_use, (loaded.plan.modality or "CT").upper()
    info = SeriesInfo(patient_name="BENCH^TURNAROUND", body_part=(use.body_parts or ["ABDOMEN"])[0] if use else "")
    if modality != "CT":
        image, _ = ball_case(99)
        write_series(image.with_array(np.rint(image.array).astype(np.int16)), folder, info=info, modality=modality)
        return info.study_uid
    spacing, size = (1.0, 1.5, 1.5), 256
    if use is not None and use.series is not None:
        spacing = tuple((lo + hi) / 2 or 1.0 for lo, hi in zip(use.spacing_min, use.spacing_max, strict=True))
        row_fov = 2 ** use.series.center[use.series.names.index("field of view along the row axis")]
        size = round(row_fov / spacing[1])
    case = abdomen_ct((slices or round(300 / spacing[0]), size, size), spacing, seed=seed)
    write_series(case.image, folder, info=info, modality="CT")
    return info.study_uid


def storescu(port: int, files: list[Path], aet: str = "STORESCU") -> None:
    done = subprocess.run(
        ["storescu", "-aet", aet, "-aec", "MEDMAP", "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"storescu of {len(files)} files failed: {done.stderr.strip()[-400:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True, help="a CT segmentation bundle")
    parser.add_argument("--slices", type=int, default=None, help="default: 300 mm at the bundle's slice spacing")
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--associations", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="a small run that proves the benchmark works (tests)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if args.quick:
        args.slices, args.instances, args.associations = 8, 40, 4
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="medmap-turnaround-"))
    orthanc = Orthanc(work / "orthanc")
    port = free_port()
    node = NodeProcess(args.bundle, work / "node", port, f"ORTHANC@127.0.0.1:{orthanc.dicom}")
    node.args[node.args.index("--idle") + 1] = "30"  # completion comes from the association's release
    results: dict = {}
    try:
        print("generating the series ...", flush=True)
        series = work / "ct"
        study = make_series(series, args.bundle, args.slices)
        files = sorted(series.iterdir())

        # the bundle's own inference time on the same series (the limit the node cannot beat)
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "medmap.cli", "predict", str(args.bundle), str(series), "-o", str(work / "direct")],
            check=True,
            capture_output=True,
            timeout=1200,
        )
        results["medmap predict, whole process (s)"] = time.perf_counter() - t0

        orthanc.start(port)
        node.start()
        t0 = time.perf_counter()
        storescu(port, files)
        sent = time.perf_counter()
        wait_for(lambda: orthanc.find("Series", {"StudyInstanceUID": study, "Modality": "SEG"}), 1200, "the SEG")
        done = time.perf_counter()
        results["sending the series with storescu (s)"] = sent - t0
        results["last C-STORE -> SEG stored in Orthanc (s)"] = done - sent

        # throughput: N instances over K concurrent associations, every one accounted for
        print(f"sending {args.instances} instances over {args.associations} associations ...", flush=True)
        per = max(1, args.instances // args.associations)
        batches = []
        for k in range(args.associations):
            folder = work / f"load-{k}"
            folder.mkdir()
            for i in range(per):
                shutil.copy(files[(k * per + i) % len(files)], folder / f"{i}.dcm")
            batches.append(folder)
        import pydicom
        from pydicom.uid import generate_uid

        for folder in batches:  # distinct SOP Instance UIDs, one new series per association
            uid = generate_uid()
            for path in folder.iterdir():
                ds = pydicom.dcmread(path)
                ds.SOPInstanceUID, ds.SeriesInstanceUID = generate_uid(), uid
                ds.Modality = "OT"  # no route takes them: this measures reception, not inference
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                ds.save_as(path)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.associations) as pool:
            list(pool.map(lambda f: storescu(port, sorted(f.iterdir())), batches))
        seconds = time.perf_counter() - t0
        import sqlite3

        with sqlite3.connect(work / "node" / "jobs.sqlite") as con:
            received = con.execute("SELECT COUNT(*) FROM instances").fetchone()[0] - len(files)
        results[f"{per * args.associations} instances / {args.associations} associations (instances/s)"] = (
            per * args.associations / seconds
        )
        results["instances recorded by the node (of those sent)"] = f"{received} of {per * args.associations}"
    finally:
        node.stop()
        orthanc.stop()
    print(f"\nturnaround of the DICOM node, a {len(files)}-slice series, bundle {args.bundle}\n")
    for name, value in results.items():
        print(f"{name:60} {value:>10.2f}" if isinstance(value, float) else f"{name:60} {value:>10}")
    (args.out / "turnaround.json").write_text(json.dumps(results, indent=2))
    print(f"JSON: {args.out / 'turnaround.json'}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
