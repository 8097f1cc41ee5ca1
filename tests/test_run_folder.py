"""The run folder as an object: what a finished run holds, read one way by every reader."""

import pytest
import torch

from medmap import run_folder as runs
from medmap.errors import ConfigError, OutputError
from medmap.plan import Plan
from medmap.run_folder import RunFolder, load_network


def test_a_trained_run_reads_back(balls_run):
    folder = RunFolder(balls_run[0])
    assert folder.plan == Plan.load(balls_run[0] / runs.PLAN)
    assert folder.weights() == [balls_run[0] / "checkpoints" / "best.pt"] == folder.trained_weights()
    assert len(folder.history) == len(folder.read(runs.HISTORY)) > 0
    assert set(folder.split_ids) >= {"train", "val"}
    assert folder.read("no-such-file.json") is None and folder.threshold is None  # segmentation: no threshold
    (network,) = folder.load_networks(folder.plan, None, "cpu")
    assert not network.training
    saved = torch.load(folder.weights()[0], weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in network.state_dict().items())
    assert folder.fold(2).path == balls_run[0] / "fold-2"


def test_what_is_not_a_run_is_one_line(balls_run, tmp_path):
    with pytest.raises(OutputError, match="not a run folder"):
        _ = RunFolder(tmp_path).plan
    with pytest.raises(OutputError, match="not a trained run"):
        RunFolder(tmp_path).trained_weights()
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=f"{broken}: cannot be loaded as this model's weights"):
        load_network(RunFolder(balls_run[0]).plan, broken)
