"""Preprocess once, train many epochs: an on-disk cache of network-ready arrays, keyed by the plan.

``<root>/<dataset>-<plan.preprocessing_key()>/`` holds per case ``<id>.npy`` (float32, channels first:
``[C, Z, Y, X]``), ``<id>_seg.npy`` (uint8 mask, segmentation) and ``<id>.json`` (geometry of the cached
grid, foreground voxel locations per class, the class label). The JSON is written last, so a case is
cached exactly when its JSON exists; an interrupted run resumes where it stopped. Arrays are read back
memory-mapped: epochs after the first decode no DICOM or NIfTI and copy only the patches they use.

What is cached depends on the task, which the cache is given (`medmap.tasks`: each task's ``cache.py``);
this module holds what every task shares: the folder keyed by the plan, the parallel workers, atomic
writes and the memory-mapped reads.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medmap.data.dataset import Case
from medmap.plan import Plan
from medmap.progress import track


@dataclass
class CachedCase:
    case_id: str
    image: Path
    mask: Path | None
    label: int | None
    meta: dict

    def arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Memory-mapped image ``[C, Z, Y, X]`` and mask ``[Z, Y, X]`` (or None)."""
        image = np.load(self.image, mmap_mode="r")
        return image, (np.load(self.mask, mmap_mode="r") if self.mask else None)


def save_array(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npy")  # processes on a shared cache never collide
    np.save(tmp, np.ascontiguousarray(array))
    os.replace(tmp, path)


def geometry_of(image) -> dict:
    return {
        "spacing": list(image.spacing),
        "origin": list(image.origin),
        "direction": image.direction.tolist(),
        "shape": list(image.shape),
    }


def _job(task, cases: list[Case], plan: Plan, folder: Path, seed: int) -> None:
    """Preprocess a group of cases in a worker process: the task says how (`Task.cache_cases`)."""
    task.cache_cases(cases, plan, folder, np.random.default_rng(seed))


class PreprocessedCache:
    """The cache folder of one dataset under one plan."""

    def __init__(self, root: str | os.PathLike, plan: Plan, task) -> None:
        """``task``: the plan's `medmap.tasks.Task`, which preprocesses each case (``cache_cases``)."""
        self.plan, self.task = plan, task
        self.folder = Path(root) / f"{plan.dataset}-{plan.preprocessing_key()}"

    def is_cached(self, case: Case) -> bool:
        return (self.folder / f"{case.case_id}.json").is_file()

    def build(
        self, cases: list[Case], *, workers: int | None = None, progress: bool = False, seed: int = 0
    ) -> list[CachedCase]:
        """Preprocess the cases not cached yet (in ``workers`` processes) and return all of them."""
        self.folder.mkdir(parents=True, exist_ok=True)
        plan_file, plan_json = self.folder / "plan.json", self.plan.model_dump_json(indent=2)
        if not plan_file.is_file() or plan_file.read_text() != plan_json:  # readers on other ranks: no rewrite
            plan_file.write_text(plan_json)
        groups: dict[str, list[Case]] = {}
        for case in cases:
            if not self.is_cached(case):
                key = case.image_key if case.lesion is not None else case.case_id
                groups.setdefault(key, []).append(case)
        jobs = list(groups.values())
        workers = workers or min(2, os.cpu_count() or 1)
        if jobs and workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(workers) as pool:
                futures = [
                    pool.submit(_job, self.task, group, self.plan, self.folder, seed + i)
                    for i, group in enumerate(jobs)
                ]
                for future in track(futures, "preprocessing", enabled=progress):
                    future.result()
        else:
            for i, group in enumerate(track(jobs, "preprocessing", enabled=progress)):
                _job(self.task, group, self.plan, self.folder, seed + i)
        return [self.get(case) for case in cases]

    def get(self, case: Case) -> CachedCase:
        meta = json.loads((self.folder / f"{case.case_id}.json").read_text())
        mask = self.folder / f"{case.case_id}_seg.npy"
        return CachedCase(
            case.case_id, self.folder / f"{case.case_id}.npy", mask if mask.exists() else None, meta.get("label"), meta
        )
