import pytest

from medmap.data.demo import write_demo_data
from medmap.data.layouts import write_msd
from medmap.inference.bundle import create_bundle
from medmap.training.run import train_run
from medmap.training.trainer import TrainConfig
from tests.builders import ball_case, tiny_demo_size, write_blobs


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """The generated demo data at test size, written once per test session (seed 7). Read-only."""
    root = tmp_path_factory.mktemp("demo") / "data"
    write_demo_data(root, seed=7, size=tiny_demo_size())
    return root


@pytest.fixture(scope="session")
def balls(tmp_path_factory):
    root = tmp_path_factory.mktemp("balls")
    training = [(f"ball_{i:02d}", *ball_case(i)) for i in range(8)]
    test = [("ball_99", ball_case(99)[0])]
    return write_msd(root / "balls", "Balls", {0: "background", 1: "ball", 2: "core"}, "MR", training, test)


@pytest.fixture(scope="session")
def balls_run(balls, tmp_path_factory):
    """A segmentation run trained once per session on `balls` (about a minute on 2 cores)."""
    run = tmp_path_factory.mktemp("runs") / "run"
    overrides = ["patch_size=[8,16,16]", "batch_size=4", "network_width=8", "network_depth=3"]
    config = TrainConfig(epochs=12, samples_per_epoch=48, workers=0, learning_rate=3e-3, warmup_epochs=1)
    summary = train_run(balls, run, task="segmentation", overrides=overrides, config=config)
    return run, summary


@pytest.fixture(scope="session")
def ball_bundle(balls_run, tmp_path_factory):
    """`balls_run` as a bundle (no extra body parts), made once per session. Read-only."""
    run, _ = balls_run
    return create_bundle(run, tmp_path_factory.mktemp("bundles") / "balls")


@pytest.fixture
def blobs(tmp_path):
    """2-D pictures whose class is whether a central disc is brighter than the background (npz)."""
    return write_blobs(tmp_path)
