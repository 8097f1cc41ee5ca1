"""Batch prediction split across processes or machines: ``medmap predict --shard i/n``.

A scheduler (a Slurm array, a Kubernetes indexed job) runs n copies of the same command with i = 1..n;
each takes a deterministic share of the input cases (sorted by case id, every n-th from the i-th), so the
shards together cover every case exactly once, whatever order the file system lists them in. Each shard
writes ``summary.shard-i-of-n.json``; whichever shard finds all n present writes the merged
``summary.json`` (atomically: two shards finishing together write the same file).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from medmap.errors import ConfigError


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n), 1 <= i <= n."""
    found = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not found or not 1 <= int(found[1]) <= int(found[2]):
        raise ConfigError(f"--shard {text}: give i/n with 1 <= i <= n (e.g. 2/8)")
    return int(found[1]), int(found[2])


def select(cases: list, shard: tuple[int, int]) -> list:
    """The shard's share of ``cases`` (objects with a ``case_id``), in case-id order."""
    index, count = shard
    ordered = sorted(cases, key=lambda c: c.case_id)
    return ordered[index - 1 :: count]


def shard_file(out: Path, shard: tuple[int, int]) -> Path:
    return Path(out) / f"summary.shard-{shard[0]}-of-{shard[1]}.json"


def write_and_merge(out: Path, shard: tuple[int, int], summary: list[dict]) -> Path | None:
    """Write this shard's summary; if every shard's is there, the merged ``summary.json`` (returned)."""
    out = Path(out)
    _atomic(shard_file(out, shard), summary)
    parts = [shard_file(out, (i, shard[1])) for i in range(1, shard[1] + 1)]
    if not all(p.is_file() for p in parts):
        return None
    merged = sorted((row for p in parts for row in json.loads(p.read_text())), key=lambda r: r["case_id"])
    return _atomic(out / "summary.json", merged)


def _atomic(path: Path, payload) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)
    return path
