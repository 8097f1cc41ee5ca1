"""The node's spool: every acknowledged instance keeps its own file; invalid UIDs are refused, not merged."""

import copy
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest

from medmap.deploy.node import Node
from medmap.deploy.scp import InvalidInstanceError, valid_uid
from medmap.deploy.settings import NodeSettings, Route
from medmap.io.dicom.writer import write_series
from tests.builders import volume


@pytest.fixture
def node(tmp_path):
    # Routing needs a bundle path only when a job runs; the spool does not read it.
    node = Node(NodeSettings(data=tmp_path / "node", routes=[Route(tmp_path / "no-bundle", modality="CT")]))
    node.spool.mkdir(parents=True)
    yield node
    node.store.close()


@pytest.fixture
def instance(tmp_path):
    (path, *_) = write_series(volume(shape=(2, 8, 8)), tmp_path / "series")
    return pydicom.dcmread(path)


def test_uid_rule():
    assert valid_uid("1.2.840.10008.1.2.1") and valid_uid("0.1") and valid_uid("1." + "2" * 62)
    for bad in ("", "1.2.", ".1", "1..2", "1.02", "1.2.a", "1.2 ", "1." + "2" * 63, "1.2\x00"):
        assert not valid_uid(bad), bad


def test_instances_whose_uids_differ_only_after_character_64_are_not_merged(node, instance):
    base = "1.2.826.0.1.3680043.8.498." + "1" * 38  # 64 characters: valid
    assert len(base) == 64
    stored = []
    for sop in (base, base + "1", base + "2"):  # the two longer ones used to share the first one's file
        ds = copy.deepcopy(instance)
        ds.SOPInstanceUID = sop
        if valid_uid(sop):
            node.ingest(ds, "TEST")
            stored.append(sop)
        else:
            with pytest.raises(InvalidInstanceError, match="not a valid DICOM UID"):
                node.ingest(ds, "TEST")
    files = sorted(node.spool.rglob("*.dcm"))
    assert [pydicom.dcmread(p).SOPInstanceUID for p in files] == stored


@pytest.mark.parametrize("bad", ["1.2.3.4_5", "1.2.3.4 5", "1.2.3.x"])
def test_c_store_with_an_invalid_uid_gets_a_failure_status_and_nothing_is_spooled(node, instance, bad):
    good = copy.deepcopy(instance)
    twin = copy.deepcopy(instance)
    good.SOPInstanceUID, twin.SOPInstanceUID = "1.2.3.4.5", bad  # the same name once made safe
    event = SimpleNamespace(
        dataset=good, file_meta=instance.file_meta, assoc=SimpleNamespace(requestor=SimpleNamespace(ae_title="SCU"))
    )
    assert node.receiver.on_store(event) == 0x0000
    event.dataset = twin
    assert node.receiver.on_store(event) == 0xC211
    (only,) = node.spool.rglob("*.dcm")
    assert pydicom.dcmread(only).SOPInstanceUID == "1.2.3.4.5"
    assert np.array_equal(pydicom.dcmread(only).pixel_array, instance.pixel_array)
