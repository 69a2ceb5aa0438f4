"""The node's parts without the network: options, spool state changes and recovery, completion, log."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from edge_runtime.node.config import Destination, NodeConfig, NodeConfigError
from edge_runtime.node.log import EventLog
from edge_runtime.node.spool import RELEASED, RESULT_FILE, SeriesKey, Spool
from edge_runtime.node.tracker import Claim, SeriesTracker

KEY = SeriesKey("1.2.3", "1.2.3.4")


def test_destination_parses_ae_host_port() -> None:
    d = Destination.parse("PACS@127.0.0.1:104")
    assert (d.ae_title, d.host, d.port, str(d)) == ("PACS", "127.0.0.1", 104, "PACS@127.0.0.1:104")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("PACS127.0.0.1:104", "expected AE@HOST:PORT"),
        ("PACS@127.0.0.1", "expected AE@HOST:PORT"),
        ("PACS@127.0.0.1:0", "port '0' is not a number from 1 to 65535"),
        ("PACS@127.0.0.1:http", "port 'http' is not a number"),
        ("A_TITLE_LONGER_THAN_16@h:104", "is not a DICOM AE title"),
        ("BAD\\AE@h:104", "is not a DICOM AE title"),
    ],
)
def test_destination_errors_name_the_value(text: str, message: str) -> None:
    with pytest.raises(NodeConfigError, match="--send") as info:
        Destination.parse(text)
    assert message in str(info.value)


def test_config_refuses_a_node_with_nothing_to_receive(tmp_path: Path) -> None:
    with pytest.raises(NodeConfigError, match="--no-scp needs --watch"):
        NodeConfig(spool=tmp_path / "s", output=tmp_path / "o", scp=False).validate()
    with pytest.raises(NodeConfigError, match="--quiet-seconds must be > 0, got 0"):
        NodeConfig(spool=tmp_path / "s", output=tmp_path / "o", quiet_seconds=0).validate()
    with pytest.raises(NodeConfigError, match="--allow") as info:
        NodeConfig(spool=tmp_path / "s", output=tmp_path / "o", allowed_aets=("A\\B",)).validate()
    assert "is not a DICOM AE title" in str(info.value)


def _store(spool: Spool, assoc: str, sops: list[str], key: SeriesKey = KEY) -> None:
    for sop in sops:
        spool.store_instance(assoc, key, sop, f"instance {sop}".encode())


def _names(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("*.dcm")}


def test_release_promotes_and_claim_makes_one_job(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.create()
    _store(spool, "a1", ["1.1", "1.2"])
    assert spool.release("a1") == [KEY]
    assert not (spool.incoming / "a1").exists()
    outcome, job = spool.claim(KEY, "S1 T2/TRA")
    assert outcome == "queued" and job is not None
    assert job.info["name"] == "S1_T2_TRA" and job.info["instances"] == 2
    assert _names(job.input) == {"1.1.dcm", "1.2.dcm"}
    assert (job.input / "1.1.dcm").read_bytes() == b"instance 1.1"
    assert spool.busy(KEY) and spool.next_job() is not None
    assert spool.claim(KEY, "again") == ("empty", None)  # nothing left in series/


def test_aborted_instances_are_held_then_merged_by_a_clean_delivery(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.create()
    _store(spool, "aborted", ["1.1", "1.2"])
    assert spool.hold("aborted") == 2
    assert spool.held_instances() == 2 and spool.waiting_series() == []
    _store(spool, "retry", ["1.2", "1.3"])
    spool.release("retry")
    assert _names(spool.series / KEY.study / KEY.series) == {"1.1.dcm", "1.2.dcm", "1.3.dcm"}
    assert (spool.series / KEY.study / KEY.series / "1.2.dcm").read_bytes() == b"instance 1.2"
    assert spool.held_instances() == 0


def test_recover_promotes_released_and_holds_interrupted_associations(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.create()
    _store(spool, "released", ["1.1"])
    (spool.incoming / "released" / RELEASED).write_bytes(b"")  # killed right after the marker
    _store(spool, "open", ["2.1"], SeriesKey("9.9", "9.9.1"))  # killed during the association
    (spool.incoming / "open" / "9.9" / "9.9.1" / ".tmp-abc-2.2.dcm").write_bytes(b"half")  # killed mid-write
    report = Spool(tmp_path).recover()
    assert (report.promoted, report.held, report.series_waiting, report.temporaries) == (1, 1, 1, 1)
    assert spool.waiting_series() == [KEY]
    assert spool.held_instances() == 1
    assert not any(spool.incoming.iterdir())


def test_recover_finishes_a_processed_job_instead_of_running_it_again(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.create()
    _store(spool, "a", ["1.1"])
    spool.release("a")
    _, job = spool.claim(KEY, "S1")
    assert job is not None
    (job.folder / RESULT_FILE).write_text(json.dumps({"send": []}))  # killed after the result, before the outbox
    report = Spool(tmp_path).recover()
    assert (report.jobs_finished, report.jobs_resumed, report.outbox) == (1, 0, 1)
    assert spool.jobs() == [] and [j.id for j in spool.outbox_jobs()] == [job.id]
    assert _names(spool.done / KEY.study / KEY.series) == {"1.1.dcm"}


def test_repeated_send_is_a_duplicate_and_a_late_instance_reruns_the_series(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.create()
    _store(spool, "a", ["1.1", "1.2"])
    spool.release("a")
    _, job = spool.claim(KEY, "S1")
    assert job is not None
    spool.finish_job(job, {"send": []})
    _store(spool, "b", ["1.2"])
    spool.release("b")
    assert spool.claim(KEY, "S1") == ("duplicate", None)
    _store(spool, "c", ["1.3"])
    spool.release("c")
    outcome, late = spool.claim(KEY, "S1")
    assert outcome == "queued" and late is not None
    assert _names(late.input) == {"1.1.dcm", "1.2.dcm", "1.3.dcm"}


def test_tracker_waits_for_release_and_quiet_time(tmp_path: Path) -> None:
    ready: list[tuple[SeriesKey, float]] = []
    called = threading.Event()

    def on_ready(key: SeriesKey) -> Claim:
        ready.append((key, time.monotonic()))
        called.set()
        return Claim.QUEUED

    tracker = SeriesTracker(1.0, on_ready)
    tracker.start()
    try:
        other = SeriesKey("1.2.3", "1.2.3.5")
        tracker.instance(KEY, "a")
        tracker.instance(other, "b")
        time.sleep(1.2)
        assert ready == []  # quiet, but both associations are still open
        tracker.association_ended("b", [other], released=False)  # aborted: contributes nothing
        ended = time.monotonic()
        tracker.association_ended("a", [KEY], released=True)
        assert called.wait(5)
        time.sleep(0.5)
        assert [key for key, _ in ready] == [KEY]
        assert tracker.waiting() == 0
        assert ready[0][1] - ended < 0.6  # the quiet time ran from the last instance, not from the release
    finally:
        tracker.stop()


def test_event_log_writes_one_json_object_per_line(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "node.log")
    log("echo", association="x", calling_ae="MONITOR")
    log("job_done", seconds=1.5, path=tmp_path)
    log.close()
    lines = (tmp_path / "node.log").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["event"] for r in records] == ["echo", "job_done"]
    assert records[1]["path"] == str(tmp_path) and records[1]["seconds"] == 1.5
    assert all(r["ts"].endswith("Z") and len(r["ts"]) == 24 for r in records)
