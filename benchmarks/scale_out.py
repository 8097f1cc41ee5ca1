"""Scale-out check: the demo liver model trained by 1 process and by N (DDP), same seed, same global batch.

    python benchmarks/scale_out.py                        # CPU: 1 vs 2 processes (gloo), a few epochs
    python benchmarks/scale_out.py --device cuda          # a GPU machine: 1 GPU vs every GPU (NCCL), AMP
    python benchmarks/scale_out.py --quick                # what the test suite runs (tiny data, 2 epochs)

Each side is a real ``medmap train --nproc-per-node N`` on generated demo liver CTs, so what runs is what
a user runs: the launcher, the rendezvous, the sampler's shares, DDP's all-reduce, rank 0's checkpoints.
Reported per side: seconds per epoch (the median after the first, training and validation), samples per
second, the speed-up over one process, the first epoch's loss next to the single process's (the same
patches and augmentation: it should agree to float precision), and on CUDA the GPUs' mean utilisation and
peak memory from ``nvidia-smi`` sampled during the run. A table and JSON; ratios are what to quote.

On a 2-core CPU two processes share the same cores one process used (each gets one thread), so the CPU
figure measures the cost of the machinery more than a gain; the GPU figures are the point of the script:
run it whenever a GPU machine is lent and record them in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from medmap.data.demo import DemoSize, write_demo_data


def gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0


class GpuSampler(threading.Thread):
    """Samples ``nvidia-smi`` once a second: utilisation (%) and memory (MiB) of every GPU."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        query = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]
        while not self.stopping.is_set():
            try:
                lines = subprocess.run(query, capture_output=True, text=True, timeout=5).stdout.splitlines()
                for line in lines:
                    utilisation, memory = (float(v) for v in line.split(","))
                    self.samples.append((utilisation, memory))
            except (OSError, ValueError, subprocess.TimeoutExpired):
                return
            self.stopping.wait(1.0)

    def summary(self) -> dict:
        if not self.samples:
            return {}
        busy = [u for u, _ in self.samples]
        return {
            "gpu_utilisation_mean": round(statistics.mean(busy), 1),
            "gpu_memory_peak_mib": max(m for _, m in self.samples),
        }


def train(data: Path, run: Path, processes: int, args, extra: list[str]) -> dict:
    command = [sys.executable, "-m", "medmap", "train", str(data), "-o", str(run), "--task", "segmentation"]
    command += ["--epochs", str(args.epochs), "--device", args.device, "--seed", "0", "--track", "off"]
    command += ["--patience", "1000", "--nproc-per-node", str(processes), *extra]
    sampler = GpuSampler() if args.device.startswith("cuda") else None
    if sampler:
        sampler.start()
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if sampler:
        sampler.stopping.set()
        sampler.join()
    if done.returncode != 0:
        raise SystemExit(f"{processes} process(es) failed:\n{done.stderr[-3000:]}")
    history = json.loads((run / "history.json").read_text())
    plan = json.loads((run / "plan.json").read_text())
    config = json.loads((run / "config.json").read_text())
    steady = [h["seconds"] for h in history[1:]] or [history[0]["seconds"]]
    epoch = statistics.median(steady)
    samples = config.get("samples_per_epoch") or plan["iterations_per_epoch"] * plan["batch_size"]
    samples -= samples % plan["batch_size"]
    return {
        "processes": processes,
        "global_batch": plan["batch_size"],
        "seconds_per_epoch": round(epoch, 2),
        "samples_per_second": round(samples / epoch, 2),
        "first_epoch_loss": history[0]["loss"],
        "final_loss": history[-1]["loss"],
        "wall_seconds": round(wall, 1),
        **(sampler.summary() if sampler else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny data, 2 epochs (the test suite's run)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (then N = every GPU)")
    parser.add_argument("--processes", type=int, default=None, help="N (default: 2 on CPU, every GPU on CUDA)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    gpus = gpu_count() if args.device.startswith("cuda") else 0
    if args.device.startswith("cuda") and gpus == 0:
        raise SystemExit("--device cuda: no GPU visible here")
    n = args.processes or (gpus if gpus else 2)
    args.epochs = args.epochs or (2 if args.quick else 4)
    size = DemoSize(chest_patients=1, nodules_per_patient=(3, 4), liver_train=3, liver_test=1, radiograph_patients=2)
    if not args.quick:
        size = DemoSize(
            chest_patients=2, nodules_per_patient=(3, 4), liver_train=12, liver_test=2, radiograph_patients=4
        )
    # a global batch every N divides; the quick run also shrinks the network and the epoch
    extra = ["--set", f"batch_size={max(2, n) * (2 if args.device.startswith('cuda') else 1)}"]
    if args.quick:
        extra += ["--set", "patch_size=[16,32,32]", "--set", "network_width=8", "--samples-per-epoch", str(8 * n)]
        extra += ["--set", "inference.overlap=0", "--set", "inference.batch_size=8"]  # evaluation: fewer windows
        extra += ["--set", "target_spacing=[8.0,4.0,4.0]"]  # coarse volumes: every step of the run is cheap
        extra += ["--workers", "0"]
    results = []
    with tempfile.TemporaryDirectory(prefix="medmap-scale-") as tmp:
        tmp = Path(tmp)
        write_demo_data(tmp / "data", seed=3, size=size)
        for processes in (1, n) if n > 1 else (1,):
            shared = [*extra, "--cache", str(tmp / "cache")]  # preprocessed once, by the first run
            results.append(train(tmp / "data" / "liver", tmp / f"run-{processes}", processes, args, shared))
    one = results[0]
    for row in results:
        row["speedup"] = round(row["samples_per_second"] / one["samples_per_second"], 2)
        row["first_epoch_loss_vs_1"] = round(
            abs(row["first_epoch_loss"] - one["first_epoch_loss"]) / one["first_epoch_loss"], 6
        )
    header = f"{'processes':>9} {'batch':>5} {'s/epoch':>8} {'samples/s':>9} {'speed-up':>8} {'loss vs 1':>9}"
    if args.device.startswith("cuda"):
        header += f" {'GPU %':>6} {'GPU MiB':>8}"
    print(f"scale-out on {args.device}: demo liver, {args.epochs} epochs, same seed and global batch")
    print(header)
    for r in results:
        line = (
            f"{r['processes']:>9} {r['global_batch']:>5} {r['seconds_per_epoch']:>8.2f} "
            f"{r['samples_per_second']:>9.2f} {r['speedup']:>8.2f} {r['first_epoch_loss_vs_1']:>9.1e}"
        )
        if "gpu_utilisation_mean" in r:
            line += f" {r['gpu_utilisation_mean']:>6.1f} {r['gpu_memory_peak_mib']:>8.0f}"
        print(line)
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"device": args.device, "gpus": gpus, "epochs": args.epochs, "quick": args.quick, "results": results}
    (args.out / "scale_out.json").write_text(json.dumps(payload, indent=1))
    print(f"JSON: {args.out / 'scale_out.json'}")


if __name__ == "__main__":
    main()
