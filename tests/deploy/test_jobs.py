"""The node's job store: the state machine, exactly-once sending by SOP Instance UID, crash recovery."""

import time
from pathlib import Path

import pytest

from medmap.deploy.jobs import JobStore
from medmap.deploy.settings import Destination, Route
from medmap.errors import ConfigError


def receive(store, sop, series="1.2.3"):
    store.record_instance(sop, series, f"/spool/{sop}.dcm", {"folder": "/spool", "modality": "CT"})


def test_a_series_goes_from_receiving_to_done(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    receive(store, "1")
    receive(store, "2")
    assert store.counts() == {"receiving": 1}
    assert store.complete_idle(60) == []  # not idle yet
    assert store.complete_idle(0) == ["1.2.3"]
    job = store.next_queued()
    assert job.state == "running" and job.attempts == 1 and store.next_queued() is None
    store.results_ready(job.id, [("9.9.1", "/results/seg.dcm")], "{}")
    assert store.counts() == {"sending": 1}
    (due,) = store.due()
    assert due[0] == "9.9.1"
    store.send_failed("9.9.1", "refused", backoff=60)
    assert store.due() == []  # backing off
    store.sent("9.9.1")
    assert store.counts() == {"done": 1}
    store.results_ready(job.id, [("9.9.1", "/results/seg.dcm")], "{}")  # the same result again: ignored
    assert [row[2] for row in store.outbox()] == ["sent"]


def test_recovery_requeues_running_jobs_and_keeps_the_outbox(tmp_path):
    path = tmp_path / "jobs.sqlite"
    store = JobStore(path)
    receive(store, "1", "A")
    receive(store, "2", "B")
    store.complete(["A", "B"])
    first, second = store.next_queued(), store.next_queued()
    store.results_ready(first.id, [("9.1", "/r/1.dcm")], "{}")
    store.close()  # "crash": second was running, first's result unsent
    again = JobStore(path)
    assert again.recover() == 1
    assert again.counts() == {"queued": 1, "sending": 1}
    assert [row[0] for row in again.due()] == ["9.1"]
    assert again.next_queued().id == second.id


def test_a_new_instance_reopens_a_finished_series(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    receive(store, "1")
    store.complete(["1.2.3"])
    job = store.next_queued()
    store.set_state(job.id, "failed", error="bad")
    time.sleep(0.01)
    receive(store, "2")
    assert store.counts() == {"receiving": 1}


def test_routes_and_destinations():
    route = Route(Path("b"), modality="CT", body_part="ABDOMEN|LIVER")
    assert route.accepts("CT", "abdomen", "")
    assert not route.accepts("MR", "ABDOMEN", "")
    assert Destination.parse("ORTHANC@127.0.0.1:4242") == Destination("ORTHANC", "127.0.0.1", 4242)
    with pytest.raises(ConfigError, match="AET@HOST:PORT"):
        Destination.parse("127.0.0.1:4242")


def test_node_settings_from_a_file_with_the_command_line_on_top(tmp_path):
    import json

    from medmap.deploy.settings import load_settings

    (tmp_path / "token").write_text("abc\n")
    settings = {
        "data": str(tmp_path / "node"),
        "port": 4000,
        "destination": "PACS@127.0.0.1:104",
        "allow": ["CT1"],
        "token_file": str(tmp_path / "token"),
        "routes": [{"bundle": "b/liver", "modality": "CT", "body_part": "ABDOMEN"}],
    }
    (tmp_path / "node.json").write_text(json.dumps(settings))
    config = load_settings(tmp_path / "node.json", {"port": 5000})
    assert config.port == 5000 and config.destination_address.ae == "PACS" and config.allow == ["CT1"]
    assert config.token == "abc" and config.routes[0].accepts("CT", "abdomen", "any")
    (tmp_path / "bad.json").write_text(json.dumps({**settings, "colour": "red"}))
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings(tmp_path / "bad.json", {})
    with pytest.raises(ConfigError, match="needs --data"):
        load_settings(None, {})
    assert config.precision == "auto" and not config.overlays
    config = load_settings(tmp_path / "node.json", {"precision": "float32", "overlays": True})
    assert config.precision == "float32" and config.overlays
    with pytest.raises(ConfigError, match="--precision half"):
        load_settings(tmp_path / "node.json", {"precision": "half"})
    assert load_settings(tmp_path / "node.json", {"port": None}).port == 4000  # an option not given
    (tmp_path / "bad.json").write_text(json.dumps({**settings, "routes": [{"bundle": "b", "colour": "red"}]}))
    with pytest.raises(ConfigError, match="unknown rule"):
        load_settings(tmp_path / "bad.json", {})
    with pytest.raises(ConfigError, match="AET@HOST:PORT"):
        load_settings(tmp_path / "node.json", {"destination": "PACS:104"})


def test_every_serve_option_is_the_setting_of_the_same_name_with_the_same_default():
    """One spelling and one default per setting: ``--token-file`` is ``token_file`` in the JSON file, and
    the option's help shows the settings model's default."""
    import typing

    import typer

    from medmap.cli import serve
    from medmap.deploy.settings import NodeSettings

    options = typing.get_type_hints(serve, include_extras=True)
    options.pop("config_file"), options.pop("return")
    assert set(options) == set(NodeSettings.model_fields) - {"routes"}  # routes: rules, in the JSON file only
    for name in ("ae", "port", "host", "idle", "device", "precision"):
        option = options[name].__metadata__[0]
        assert isinstance(option, typer.models.OptionInfo)
        assert f"[{NodeSettings.model_fields[name].default}]" in option.help


def test_the_outbox_sends_more_objects_of_one_kind_than_an_association_has_contexts(tmp_path):
    """An overlay series is hundreds of instances of one SOP class; DICOM allows 128 presentation contexts
    per association, so the outbox must propose one per kind, not one per object."""
    import socket

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
    from pynetdicom import AE, StoragePresentationContexts, evt

    from medmap.deploy.node import Node
    from medmap.deploy.settings import NodeSettings

    received = []

    def on_store(event):
        received.append(event.request.AffectedSOPInstanceUID)
        return 0x0000

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pacs = AE("PACS")
    pacs.supported_contexts = StoragePresentationContexts
    server = pacs.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        config = NodeSettings(data=tmp_path / "node", routes=[Route(Path("b"))], destination=f"PACS@127.0.0.1:{port}")
        node = Node(config)
        receive(node.store, "1")
        node.store.complete(["1.2.3"])
        job = node.store.next_queued()
        results = []
        for i in range(150):
            ds = Dataset()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
            ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = (
                ds.SOPClassUID,
                ds.SOPInstanceUID,
            )
            ds.Modality = "OT"
            path = tmp_path / f"overlay-{i}.dcm"
            ds.save_as(path, enforce_file_format=True)
            results.append((str(ds.SOPInstanceUID), str(path)))
        node.store.results_ready(job.id, results, "{}")
        assert node.outbox.send_due()
        assert sorted(received) == sorted(uid for uid, _ in results)
        assert node.store.counts() == {"done": 1}
    finally:
        server.shutdown()


def test_a_resent_instance_does_not_reopen_a_finished_series_but_a_new_one_does(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    receive(store, "1")
    receive(store, "2")
    store.complete(["1.2.3"])
    job = store.next_queued()
    store.set_state(job.id, "done")
    receive(store, "2")  # a sender unsure whether "2" was stored sends it again
    assert store.counts() == {"done": 1}
    receive(store, "3")  # the series grew: answer it again
    assert store.counts() == {"receiving": 1}


def test_recovery_restarts_the_idle_clock_of_series_cut_off_by_the_crash(tmp_path):
    path = tmp_path / "jobs.sqlite"
    store = JobStore(path)
    receive(store, "1")
    store.close()
    time.sleep(1.1)  # the node was down for a while
    store = JobStore(path)
    assert store.complete_idle(1.0) == ["1.2.3"]  # without recovery the series would count as idle
    store.close()
    store = JobStore(path)
    receive(store, "2", series="4.5.6")
    time.sleep(1.1)
    store.recover()
    assert store.complete_idle(1.0) == []  # its sender gets the idle time again after the restart
