"""Nothing of the test cases informs the plan: not read during planning, and changing their intensities
changes nothing in it (spacing, normalisation, patch size, augmentation strength)."""

from medmap.data.dataset import Case
from medmap.data.layouts import read_dataset, write_msd
from medmap.io.load import load, save
from medmap.training.run import prepare_plan
from tests.builders import ball_case, split_of


def test_test_cases_are_never_read_and_do_not_change_the_plan(tmp_path, monkeypatch):
    cases = [(f"ball_{i:02d}", *ball_case(i)) for i in range(10)]
    root = write_msd(tmp_path / "balls", "Balls", {0: "background", 1: "ball", 2: "core"}, "MR", cases, [])
    dataset = read_dataset(root)
    splits = split_of(dataset)
    test_ids = {c.case_id for c in splits["test"]}
    assert test_ids  # no own test set: some labelled cases are held out

    loaded = []
    original = Case.load_image
    monkeypatch.setattr(Case, "load_image", lambda self: loaded.append(self.case_id) or original(self))

    def plan():
        return prepare_plan(
            read_dataset(root), overrides=[], device="cpu", progress=False, cases=splits["train"] + splits["val"]
        )

    before = plan()
    assert loaded and not test_ids & set(loaded)
    for case in splits["test"]:  # a test case ten times brighter and shifted: the plan must not notice
        path = case.images[0]
        image = load(path)
        save(image.with_array(image.array * 10.0 + 500.0), path)
    after = plan()
    assert after.model_dump() == before.model_dump()
