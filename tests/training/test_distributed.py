"""Distributed training (torchrun, gloo on 2 CPU processes) on the small `balls` segmentation set.

Each run is a real `medmap train --nproc-per-node 2`: the launcher, two ranks, a rendezvous on
127.0.0.1. The checks: the same global batch gives the single-process loss curve, rank 0 alone writes
the run, a run killed mid-epoch resumes to the weights of an uninterrupted one, a killed rank ends the
run with one line, and the run's rules (resume with as many processes) are one-line refusals.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medmap.errors import ConfigError
from medmap.training.distributed import Ranks
from medmap.training.run import train_run

pytestmark = [
    pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without distributed"),
    pytest.mark.xdist_group("distributed"),  # one worker builds the runs (make test: --dist loadgroup)
]

SMALL = [
    "--task",
    "segmentation",
    "--set",
    "patch_size=[8,16,16]",
    "--set",
    "batch_size=4",
    "--set",
    "network_width=8",
    "--set",
    "network_depth=3",
    "--workers",
    "0",
    "--lr",
    "3e-3",
    "--track",
    "off",
    "--patience",
    "100",
    "--samples-per-epoch",
    "96",  # 24 steps: an epoch lasts long enough to be killed in the middle
]


def medmap(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "medmap", "train", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the test can stop the launcher and every rank it started at once
        **kwargs,
    )


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"did not end within {timeout} s: {err[-2000:]}")
    return process.returncode, out, err


def weights(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=False)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            _, err = process.communicate()
            pytest.fail(f"{path} never appeared: {err[-2000:]}")
        time.sleep(0.02)


def ranks_of(launcher: int) -> dict[int, int]:
    """{rank: pid} of the training processes under a launcher (read from /proc: their RANK variable)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        variables = dict(v.split(b"=", 1) for v in environ if b"=" in v)
        if parent == launcher and b"RANK" in variables:
            found[int(variables[b"RANK"])] = int(entry.name)
    return found


@pytest.fixture(scope="session")  # session: built once even when xdist interleaves modules
def two_process_run(balls, tmp_path_factory):
    """One single-process and one 2-process run of 3 epochs with the same seed and global batch."""
    root = tmp_path_factory.mktemp("ddp")
    runs = {}
    for name, extra in (("one", []), ("two", ["--nproc-per-node", "2"])):
        code, _, err = finish(medmap(str(balls), "-o", str(root / name), *SMALL, "--epochs", "3", *extra))
        assert code == 0, err[-3000:]
        runs[name] = root / name
    return runs


def test_two_processes_follow_the_single_process_loss_curve(two_process_run):
    one = json.loads((two_process_run["one"] / "history.json").read_text())
    two = json.loads((two_process_run["two"] / "history.json").read_text())
    assert len(one) == len(two) == 3
    # same patches, same augmentation, global batch Dice: the same loss, up to the order of float sums (the
    # gradient is averaged over two halves), which 72 Adam steps amplify a little
    assert two[0]["loss"] == pytest.approx(one[0]["loss"], rel=1e-4)
    for a, b in zip(one, two, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=5e-3)
        assert b["val"]["dice"] == pytest.approx(a["val"]["dice"], abs=0.02)  # argmax flips a few voxels
    a, b = weights(two_process_run["one"])["model"], weights(two_process_run["two"])["model"]
    difference = sum(float((a[k].float() - b[k].float()).square().sum()) for k in a) ** 0.5
    size = sum(float(a[k].float().square().sum()) for k in a) ** 0.5
    assert difference / size < 0.05  # measured 0.0002 (0.019 with 40-step epochs): Adam amplifies float noise


def test_rank_zero_alone_writes_one_run_folder(two_process_run):
    run = two_process_run["two"]
    state = weights(run)
    assert state["world_size"] == 2 and len(state["ranks"]) == 2  # every rank's random state, for resume
    assert not any(run.parent.glob("**/*.partial"))
    assert json.loads((run / "provenance.json").read_text())["hardware"]["training_processes"] == 2
    assert (run / "metrics.json").is_file() and (run / "report.html").is_file()
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in two_process_run["one"].iterdir())


def test_a_run_killed_mid_epoch_resumes_to_the_uninterrupted_weights(balls, two_process_run, tmp_path):
    args = [*SMALL, "--epochs", "3", "--nproc-per-node", "2"]  # as the uninterrupted run of the fixture
    straight = two_process_run["two"]
    killed = tmp_path / "killed"
    process = medmap(str(balls), "-o", str(killed), *args)
    wait_for(killed / "history.json", process)  # epoch 1 is checkpointed; epoch 2 is under way
    time.sleep(0.3)
    for pid in [*ranks_of(process.pid).values(), process.pid]:  # the machine goes away: every process at once
        os.kill(pid, signal.SIGKILL)  # (the ranks run in sessions of their own: a group kill misses them)
    process.communicate()
    assert len(json.loads((killed / "history.json").read_text())) < 3
    code, _, err = finish(medmap(str(balls), "-o", str(killed), *args, "--resume"))
    assert code == 0, err[-3000:]
    a, b = weights(straight), weights(killed)
    assert len(b["history"]) == 3
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_a_killed_rank_ends_the_run_with_one_line(balls, tmp_path):
    run = tmp_path / "run"
    process = medmap(str(balls), "-o", str(run), *SMALL, "--epochs", "50", "--nproc-per-node", "2")
    wait_for(run / "history.json", process)
    ranks = ranks_of(process.pid)
    assert sorted(ranks) == [0, 1]
    started = time.monotonic()
    os.kill(ranks[1], signal.SIGKILL)
    code, _, err = finish(process, timeout=120)
    assert time.monotonic() - started < 60
    assert code == 1
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("epoch", "  "))]
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == [line for line in errors if "rank 1 was killed (SIGKILL)" in line] and len(errors) == 1, err
    assert "Traceback" not in err


def test_resuming_with_another_number_of_processes_is_one_line(balls, two_process_run, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(two_process_run["two"], run)
    code, _, err = finish(medmap(str(balls), "-o", str(run), "--resume", "--track", "off"))
    assert code == 1
    assert err.strip().splitlines() == [
        f"error: {run / 'checkpoints' / 'last.pt'}: saved by 2 training process(es); resume it with as many "
        "(--nproc-per-node), not 1"
    ]


def test_ranks_from_the_launcher_and_their_shares():
    single = Ranks.from_launcher({})
    assert not single.distributed and single.is_main and single.device("cuda") == "cuda"
    second = Ranks.from_launcher(
        {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "x"}
    )
    assert second.distributed and not second.is_main and not second.is_local_main and second.supervised
    assert second.device("cuda") == "cuda:1" and second.device("cpu") == "cpu"
    assert second.batch_share(8) == 2
    with pytest.raises(Exception, match="batch size 6 does not divide among 4 processes"):
        second.batch_share(6)
    shares = [Ranks(rank=r, world_size=4).share(10) for r in range(4)]
    assert [len(s) for s in shares] == [3, 3, 2, 2]
    assert [i for s in shares for i in s] == list(range(10))  # contiguous: gathering keeps the order


def _silent_peer(rank: int, port: int, results) -> None:
    """Rank 1 joins and then never answers; rank 0's collective must give up after the timeout."""
    from datetime import timedelta

    from medmap.training.distributed import LostRankError

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    ranks = Ranks(rank=rank, world_size=2, timeout=timedelta(seconds=3))
    ranks.start("cpu")
    if rank == 1:
        time.sleep(20)
        return
    started = time.monotonic()
    try:
        with ranks.guard("training epoch 3"):
            torch.distributed.all_reduce(torch.ones(1))
    except LostRankError as exc:
        results.put((str(exc), exc.quiet, time.monotonic() - started))


def test_a_hung_rank_is_a_one_line_error_after_the_timeout():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = mp.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=_silent_peer, args=(rank, port, results)) for rank in range(2)]
    for process in processes:
        process.start()
    try:
        message, quiet, waited = results.get(timeout=60)
    finally:
        for process in processes:
            process.kill()
            process.join()
    assert 2 < waited < 30 and not quiet  # the rank that saw the hang says so, after the timeout
    assert message.startswith("rank 0: no answer from the other training processes within 0:00:03 while training")
    assert "--resume" in message


def test_folds_trained_one_by_one_then_gathered(balls, tmp_path):
    """`--fold i` processes at once (each joins the run the first planned), then `--folds K` evaluates."""
    run = tmp_path / "run"
    args = [*SMALL, "--epochs", "2", "--samples-per-epoch", "16", "--folds", "2"]  # (the last one counts)
    processes = [medmap(str(balls), "-o", str(run), *args, "--fold", str(i)) for i in range(2)]
    for process in processes:
        code, out, err = finish(process)
        assert code == 0, err[-3000:]
        assert "trained" in out and "--folds 2" in out
    assert not (run / "metrics.json").exists()
    assert all((run / f"fold-{i}" / "finished.json").is_file() for i in range(2))
    trained = {i: (run / f"fold-{i}" / "checkpoints" / "best.pt").stat().st_mtime_ns for i in range(2)}
    code, out, err = finish(medmap(str(balls), "-o", str(run), *args))
    assert code == 0, err[-3000:]
    assert (run / "metrics.json").is_file() and "Dice" in out
    assert trained == {i: (run / f"fold-{i}" / "checkpoints" / "best.pt").stat().st_mtime_ns for i in range(2)}
    with pytest.raises(ConfigError, match=f"^{run}: planned for --folds 2, not 3$"):
        train_run(balls, run, task="segmentation", folds=3, fold=0)


def test_the_suite_runs_this_module_on_one_worker(request):
    """Under `make test` (--dist loadgroup) the group mark must reach xdist, or the runs above are built twice.

    pytest 9.2 moved node ids where pytest-xdist 3.8 no longer writes its group suffix: grouping stopped
    silently and the suite grew by 3 minutes. This fails instead.
    """
    if getattr(request.config.option, "loadgroup", False):
        assert request.node.nodeid.endswith("@distributed"), request.node.nodeid
