"""`medmap predict --shard i/n`: the shards together are the whole input, no case twice, whatever order
the cases come in; the last shard to finish merges one summary; nonsense shard values are one line."""

import json

import pytest

from medmap.errors import ConfigError
from medmap.inference.predictor import InputCase, predict
from medmap.inference.shards import parse_shard, select
from medmap.io.load import save
from tests.builders import ball_case
from tests.helpers import assert_one_line_error, medmap_cli


def test_shards_partition_the_cases_whatever_their_order():
    cases = [InputCase(f"case-{i:03d}", None) for i in range(23)]
    for n in (1, 2, 3, 7, 30):
        shares = [select(cases, (i, n)) for i in range(1, n + 1)]
        ids = [c.case_id for share in shares for c in share]
        assert sorted(ids) == sorted(c.case_id for c in cases) and len(ids) == len(set(ids))
        assert max(map(len, shares)) - min(map(len, shares)) <= 1  # balanced
        shuffled = list(reversed(cases))
        assert [select(shuffled, (i, n)) for i in range(1, n + 1)] == shares  # order of listing does not matter


@pytest.mark.parametrize("text", ["0/4", "5/4", "2", "a/b", "1/0", ""])
def test_bad_shards_are_refused(text):
    with pytest.raises(ConfigError):
        parse_shard(text)


def test_shards_predict_and_merge_one_summary(ball_bundle, tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    for seed in (90, 91, 92, 93, 94):
        save(ball_case(seed)[0], source / f"ball_{seed}.nii.gz")
    out = tmp_path / "out"
    seen = []
    for i in (2, 1):  # finishing in any order
        assert not (out / "summary.json").exists()
        seen += [r.case_id for r in predict(ball_bundle, source, out, shard=(i, 2))]
    assert sorted(seen) == [f"ball_{s}" for s in (90, 91, 92, 93, 94)]
    merged = json.loads((out / "summary.json").read_text())
    assert [row["case_id"] for row in merged] == sorted(seen) and all(row["ok"] for row in merged)


def test_cli_refuses_a_bad_shard_in_one_line(tmp_path):
    result = medmap_cli("predict", tmp_path / "bundle", tmp_path, "-o", tmp_path / "out", "--shard", "3/2")
    assert_one_line_error(result, "--shard 3/2")
    assert not (tmp_path / "out").exists()
