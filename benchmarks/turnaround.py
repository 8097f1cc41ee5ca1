"""The DICOM node end to end: how long from the last C-STORE of a CT series to its SEG stored in the PACS,
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


def make_ct(folder: Path, slices: int, seed: int = 0, modality: str = "CT", size: int = 256) -> str:
    """The abdominal phantom as a DICOM series, written as the modality the bundle takes."""
    from medmap.data.phantoms import abdomen_ct
    from medmap.io.dicom.writer import SeriesInfo, write_series

    case = abdomen_ct((slices, size, size), (1.0, 1.5, 1.5), seed=seed)
    info = SeriesInfo(patient_name="BENCH^TURNAROUND", body_part="ABDOMEN")
    image = case.image if modality == "CT" else case.image.with_array(case.image.array.clip(0, None))
    write_series(image, folder, info=info, modality=modality)
    return info.study_uid


def bundle_modality(bundle: Path) -> str:
    return json.loads((bundle / "bundle.json").read_text()).get("input", {}).get("modality") or "CT"


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
    parser.add_argument("--slices", type=int, default=300)
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
        print("generating the CT series ...", flush=True)
        series = work / "ct"
        study = make_ct(series, args.slices, modality=bundle_modality(args.bundle), size=96 if args.quick else 256)
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
    print(f"\nturnaround of the DICOM node, {args.slices}-slice CT, bundle {args.bundle}\n")
    for name, value in results.items():
        print(f"{name:60} {value:>10.2f}" if isinstance(value, float) else f"{name:60} {value:>10}")
    (args.out / "turnaround.json").write_text(json.dumps(results, indent=2))
    print(f"JSON: {args.out / 'turnaround.json'}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
