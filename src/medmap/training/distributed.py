"""Training in several processes with PyTorch's own engine: torch.distributed, DDP, launched by torchrun.

`Ranks` is where a process learns its place (rank, world size, rank on its machine) and the one object
through which the trainer and the run talk to the others: agree on a value (rank 0's), gather arrays,
add up numbers, wait. Rank 0 writes the run folder; every rank trains on its share of each global
batch (`medmap.data.loader.RankSampler`). Two process groups: the training one (NCCL on CUDA, gloo on
the CPU) with a collective timeout, so that a rank that hangs ends the run instead of freezing it; and a
gloo one with a long timeout for waiting while rank 0 plans and caches (that can take hours on a big
dataset). A failed collective (a peer died, or timed out) becomes `LostRankError`.

`launch` is what ``medmap train --nproc-per-node N`` runs: torchrun's elastic agent, in process, with
N copies of the same command on this machine; a rank that dies ends the others, and the launcher prints
one line naming it.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import torch

from medmap.device import usable_cores
from medmap.errors import ConfigError, MedmapError

COLLECTIVE_TIMEOUT = timedelta(minutes=30)  # a training collective that waits longer than this: a rank hung
PREPARATION_TIMEOUT = timedelta(hours=24)  # rank 0 planning and caching a large dataset while the others wait
# how gloo and NCCL say that a peer went away or a collective timed out
_TRANSPORT = re.compile(r"gloo|nccl|connection (reset|closed)|timed? ?out|broken pipe", re.IGNORECASE)
_TIMEOUT = re.compile(r"timed? ?out", re.IGNORECASE)


class LostRankError(MedmapError):
    """Another training process died or stopped answering: this one stops (the run resumes with --resume).

    ``quiet``: under torchrun's agent, which reports the process that failed first, the others' echo of it
    is left out (the CLI exits 1 without a line), so a user reads one line about the cause."""

    def __init__(self, message: object = "", *, quiet: bool = False) -> None:
        super().__init__(message)
        self.quiet = quiet


@dataclass
class Ranks:
    """This process's place among the training processes; ``Ranks()`` is a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    supervised: bool = False  # started by torchrun's elastic agent (which reports a failed rank itself)
    timeout: timedelta = COLLECTIVE_TIMEOUT  # a training collective waiting longer: a rank hung
    _control: object = field(default=None, repr=False)  # the gloo group used for waiting and small objects
    _threads: int = field(default=0, repr=False)  # torch's threads before start() divided the cores

    @classmethod
    def from_launcher(cls, environ: dict[str, str] | None = None, timeout: timedelta = COLLECTIVE_TIMEOUT) -> Ranks:
        """Read what torchrun tells each process it starts (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE:
        torchrun's contract with its workers); without them, one process."""
        env = os.environ if environ is None else environ
        if "RANK" not in env or "WORLD_SIZE" not in env:
            return cls(timeout=timeout)
        world = int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_WORLD_SIZE", world))
        supervised = "TORCHELASTIC_RUN_ID" in env
        return cls(int(env["RANK"]), world, int(env.get("LOCAL_RANK", 0)), local, supervised, timeout)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_local_main(self) -> bool:
        return self.local_rank == 0

    def device(self, requested: str) -> str:
        """Each rank on a machine takes its own GPU: ``cuda`` becomes ``cuda:<local rank>``."""
        if self.distributed and requested == "cuda":
            return f"cuda:{self.local_rank}"
        return requested

    def batch_share(self, global_batch: int) -> int:
        """Per-rank batch: the global batch (the plan's) is the same whatever the number of ranks."""
        if global_batch % self.world_size:
            raise ConfigError(
                f"batch size {global_batch} does not divide among {self.world_size} processes: "
                f"set --set batch_size=<a multiple of {self.world_size}> or use another number of processes"
            )
        return global_batch // self.world_size

    def start(self, device: str) -> None:
        """Join the other ranks (no-op for one process). On the CPU each rank gets its machine's cores
        divided among the ranks on it, so N ranks do not fight over the same threads."""
        if not self.distributed or torch.distributed.is_initialized():
            return
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        else:
            self._threads = torch.get_num_threads()
            torch.set_num_threads(max(1, usable_cores() // self.local_world_size))
        torch.distributed.init_process_group(backend, rank=self.rank, world_size=self.world_size, timeout=self.timeout)
        self._control = torch.distributed.new_group(backend="gloo", timeout=PREPARATION_TIMEOUT)

    @staticmethod
    def _nccl() -> bool:
        return torch.distributed.get_backend() == "nccl"

    def stop(self) -> None:
        """Leave the group; rank 0, which evaluates alone afterwards, gets its machine's threads back."""
        if self.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
            if self._threads:
                torch.set_num_threads(self._threads)

    def _collective(self, what: str, call, *args, **kwargs):
        with self.guard(what):
            return call(*args, **kwargs)

    @contextlib.contextmanager
    def guard(self, what: str):
        """Turn a collective's failure (a peer died: connection reset; or it hung: timeout) into
        `LostRankError`; used around the collectives medmap calls and around DDP's training steps."""
        try:
            yield
        except RuntimeError as exc:  # DistBackendError is one; gloo raises plain RuntimeErrors
            text = str(exc)
            if not (isinstance(exc, torch.distributed.DistBackendError) or _TRANSPORT.search(text)):
                raise
            if _TIMEOUT.search(text):  # this rank saw the hang: it is the one to say so
                raise LostRankError(
                    f"rank {self.rank}: no answer from the other training processes within {self.timeout} while "
                    f"{what} (one hung?); the run stopped at its last checkpoint: continue it with --resume"
                ) from exc
            first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
            raise LostRankError(  # a peer died: torchrun's agent names it; this echo is quiet under the agent
                f"rank {self.rank}: lost the other training processes while {what} ({first[:160]}); "
                "the run stopped at its last checkpoint: continue it with --resume",
                quiet=self.supervised,
            ) from exc

    def wait(self, what: str = "waiting for rank 0") -> None:
        """All ranks meet here, patiently (rank 0 may be planning and caching a large dataset)."""
        if self.distributed:
            self._collective(what, torch.distributed.barrier, group=self._control)

    def agree(self, value, what: str = "agreeing on a value", *, patient: bool = False):
        """Rank 0's ``value`` on every rank (decisions that must not differ: epochs, stopping)."""
        if not self.distributed:
            return value
        box = [value]
        group = self._control if patient else None  # long timeout while rank 0 prepares; else the training one
        self._collective(what, torch.distributed.broadcast_object_list, box, src=0, group=group)
        return box[0]

    def gather(self, array: np.ndarray, what: str = "gathering validation outputs") -> np.ndarray:
        """Every rank's ``array`` concatenated in rank order (ranks hold contiguous shares, so this is the
        original order). Pickled: validation outputs are small."""
        if not self.distributed:
            return array
        parts = self.gather_objects(array, what)
        return np.concatenate([p for p in parts if p.size] or parts[:1])  # a rank may have had no share

    def total(self, value: float, what: str = "adding up a metric") -> float:
        if not self.distributed:
            return value
        device = torch.device("cuda", torch.cuda.current_device()) if self._nccl() else torch.device("cpu")
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
        self._collective(what, torch.distributed.all_reduce, tensor)
        return float(tensor.item())

    def gather_objects(self, value, what: str = "gathering states") -> list:
        if not self.distributed:
            return [value]
        parts: list = [None] * self.world_size
        self._collective(what, torch.distributed.all_gather_object, parts, value)
        return parts

    def share(self, n: int) -> range:
        """This rank's contiguous share of ``n`` evaluation items (the first ranks take one more)."""
        base, extra = divmod(n, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return range(start, start + base + (self.rank < extra))


def wrap(model: torch.nn.Module, ranks: Ranks, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` (unchanged for one process). Batch norm becomes
    SyncBatchNorm on GPUs (statistics over the global batch); PyTorch's SyncBatchNorm has no CPU kernel,
    so on the CPU each rank normalises over its own share (segmenters use instance norm: unaffected)."""
    if not ranks.distributed:
        return model
    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def bare(model: torch.nn.Module) -> torch.nn.Module:
    """The network inside a DDP wrapper (what checkpoints hold: loadable by one process)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def launch(argv: list[str], nproc: int) -> int:
    """Run ``python -m medmap <argv>`` as ``nproc`` ranks on this machine through torchrun's elastic agent
    (rendezvous on 127.0.0.1, no restarts); returns the exit status. A rank killed by a signal is named
    in one ``error:`` line (a rank that failed on its own has printed its error already)."""
    import logging
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc < 1:
        raise ConfigError(f"--nproc-per-node {nproc}: at least 1")
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # its banners are not for users
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # one machine: the ranks talk over loopback only
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",
        max_restarts=0,
        monitor_interval=0.2,
        start_method="spawn",
    )
    try:
        elastic_launch(config, entrypoint=sys.executable)("-m", "medmap", *argv)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        if failure.exitcode < 0:
            sys.stderr.write(
                f"error: training process rank {rank} was killed ({failure.signal_name()}); the others were "
                "stopped; the run resumes from its last checkpoint with --resume\n"
            )
        return 1
    return 0
