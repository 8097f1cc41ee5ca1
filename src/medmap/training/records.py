"""What a training run writes about itself beside its model: the split's note in the plan, the intended use
(`medmap.intended_use`) and the provenance (`medmap.provenance`)."""

from __future__ import annotations

from pathlib import Path

from medmap import provenance
from medmap.data.dataset import Case
from medmap.data.demo import is_synthetic
from medmap.intended_use import FILE as INTENDED_USE
from medmap.intended_use import fit_intended_use
from medmap.plan import Plan
from medmap.provenance import FILE as PROVENANCE
from medmap.run_folder import RunFolder
from medmap.training.config import TrainConfig


def split_note(splits: dict[str, list[Case]]) -> str:
    counts = {name: len(cases) for name, cases in splits.items() if cases}
    held = "; ".join(f"{n} {name}" for name, n in counts.items() if name not in ("train", "val"))
    return (
        f"cases: {counts.get('train', 0)} trained on, {counts.get('val', 0)} for validation"
        + (f", {held}" if held else "")
        + " (split by patient; planned from the training and validation cases only)"
    )


def write_intended_use(run_dir: Path, plan: Plan, records: dict[str, list[dict]]) -> None:
    """``intended_use.json``: what the model will accept, fitted on the training cases and calibrated on
    the validation cases (`medmap.intended_use`); kept as it is when a run is resumed."""
    if not (run_dir / INTENDED_USE).is_file():
        fit_intended_use(plan.modality, records["train"], records["val"]).save(run_dir / INTENDED_USE)


def write_provenance(
    run_dir: Path,
    data: str | Path,
    splits: dict[str, list[Case]],
    records: dict[str, list[dict]],
    config: TrainConfig,
    command: list[str] | None,
    labels: dict[int, str] | None = None,
    processes: int = 1,
) -> None:
    """``provenance.json`` (`medmap.provenance`): versions, commit, command, seed, hardware, and a digest of
    the data (case ids, labels and lesions per split, the training and validation images' features). A
    resumed run adds an entry under ``resumed``."""
    folder = RunFolder(run_dir)
    record = provenance.collect(seed=config.seed, command=command)
    record["hardware"]["training_processes"] = processes
    first = folder.read(PROVENANCE)
    if first is not None:
        first.setdefault("resumed", []).append({k: record[k] for k in ("started", "command", "source", "versions")})
        folder.write(PROVENANCE, first)
        return
    cases = {
        name: [[c.case_id, c.patient_id, c.label, c.lesion.position if c.lesion else None] for c in split]
        for name, split in splits.items()
    }
    record["data"] = {
        "path": str(Path(data).resolve()),
        "digest": provenance.data_digest({"cases": cases, "images": records}),
        "cases": {name: len(split) for name, split in splits.items() if split},
        "synthetic": is_synthetic(data),
    }
    if labels and any(c.label is not None for split in splits.values() for c in split):
        record["data"]["classes"] = {
            name: {labels.get(k, str(k)): sum(c.label == k for c in split) for k in sorted(labels)}
            for name, split in splits.items()
            if split
        }
    folder.write(PROVENANCE, record)
