import json
import os
from pathlib import Path

import pytest
import torch

from medmap.data.demo import write_demo_data
from medmap.data.layouts import write_msd
from medmap.device import usable_cores
from medmap.inference.bundle import create_bundle
from medmap.training.config import TrainConfig
from medmap.training.run import train_run
from tests.builders import ball_case, tiny_demo_size, write_blobs


def pytest_configure(config):
    """Under xdist each worker gets its share of the cores (and so do the programs it starts): two workers
    of two torch threads each on two cores made conv-heavy tests several times slower than alone."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        threads = max(1, usable_cores() // int(workers))
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


def once_for_all_workers(tmp_path_factory, worker_id: str, name: str, make) -> Path:
    """``make(folder)`` run once per test session even with several xdist workers: the first worker to
    ask builds it under the session's shared temp root (a file lock keeps the others waiting), the rest
    read it. Fixtures built this way are read-only for the tests (they write beside, never into them)."""
    if worker_id == "master":  # one process: nothing to share
        folder = tmp_path_factory.mktemp(name)
        make(folder)
        return folder
    from filelock import FileLock

    folder = tmp_path_factory.getbasetemp().parent / name
    with FileLock(f"{folder}.lock"):
        if not (folder / ".built").is_file():
            folder.mkdir(exist_ok=True)
            make(folder)
            (folder / ".built").touch()
    return folder


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory, worker_id):
    """The generated demo data at test size, written once per test session (seed 7). Read-only."""
    folder = once_for_all_workers(
        tmp_path_factory, worker_id, "demo", lambda f: write_demo_data(f / "data", seed=7, size=tiny_demo_size())
    )
    return folder / "data"


@pytest.fixture(scope="session")
def balls(tmp_path_factory, worker_id):
    def make(folder):
        training = [(f"ball_{i:02d}", *ball_case(i)) for i in range(8)]
        test = [("ball_99", ball_case(99)[0])]
        write_msd(folder / "balls", "Balls", {0: "background", 1: "ball", 2: "core"}, "MR", training, test)

    return once_for_all_workers(tmp_path_factory, worker_id, "balls", make) / "balls"


@pytest.fixture(scope="session")
def balls_run(balls, tmp_path_factory, worker_id):
    """A segmentation run trained once per session on `balls` (about a minute on 2 cores), shared by the
    xdist workers. Tests write their evaluations beside its files (``evaluation-*``), never over them."""

    def make(folder):
        overrides = ["patch_size=[8,16,16]", "batch_size=4", "network_width=8", "network_depth=3"]
        config = TrainConfig(epochs=12, samples_per_epoch=48, workers=0, learning_rate=3e-3, warmup_epochs=1)
        summary = train_run(balls, folder / "run", task="segmentation", overrides=overrides, config=config)
        (folder / "summary.json").write_text(json.dumps(summary, default=str))

    folder = once_for_all_workers(tmp_path_factory, worker_id, "balls-run", make)
    return folder / "run", json.loads((folder / "summary.json").read_text())


@pytest.fixture(scope="session")
def ball_bundle(balls_run, tmp_path_factory, worker_id):
    """`balls_run` as a bundle (no extra body parts), made once per session. Read-only."""
    run, _ = balls_run
    folder = once_for_all_workers(tmp_path_factory, worker_id, "ball-bundle", lambda f: create_bundle(run, f / "balls"))
    return folder / "balls"


@pytest.fixture
def blobs(tmp_path):
    """2-D pictures whose class is whether a central disc is brighter than the background (npz)."""
    return write_blobs(tmp_path)
