import pytest

from medmap.data.demo import write_demo_data
from tests.builders import tiny_demo_size


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """The generated demo data at test size, written once per test session (seed 7). Read-only."""
    root = tmp_path_factory.mktemp("demo") / "data"
    write_demo_data(root, seed=7, size=tiny_demo_size())
    return root
