"""`edge-seg serve` against real DICOM peers on 127.0.0.1: dcmtk storescu (scanner), storescp (PACS),
echoscu (probe), and pynetdicom as a scanner that aborts or is cut off mid-series.

The node runs as its own process, so each fault is real: SIGKILL during receive and processing,
a destination that is down, an aborted association, a file system that fills up, SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import RLELossless

pytest.importorskip("pynetdicom", reason="the node needs the 'node' extra (pynetdicom)")
pytest.importorskip("highdicom", reason="SEG and SR need the 'dicom-seg' extra (highdicom)")

from benchmarks.node_peers import (
    NodeProcess,
    StoreSCP,
    echoscu,
    free_port,
    make_study,
    missing_tools,
    pynetdicom_send,
    running,
    seg_references,
    storescu,
    wait_for,
)

pytestmark = pytest.mark.skipif(
    bool(missing_tools()), reason=f"dcmtk tools missing: {missing_tools()} (apt-get install dcmtk)"
)

QUIET = "0.5"
FAST = ["--quiet-seconds", QUIET, "--threads", "1", "--backend", "litert", "--retry-seconds", "0.3",
        "--retry-max-seconds", "1", "--drain-seconds", "20"]


def _node(tmp_path: Path, *args: str, spool: Path | None = None) -> NodeProcess:
    return NodeProcess(spool or tmp_path / "spool", tmp_path / "out", tmp_path / "node.log", args=[*FAST, *args])


def _status(spool: Path) -> tuple[int, dict]:
    exe = Path(sys.executable).with_name("edge-seg")
    done = subprocess.run([str(exe), "serve", "--status", "--spool", str(spool)], capture_output=True, text=True,
                          timeout=60, check=False)
    return done.returncode, json.loads(done.stdout)


def _settle(seconds: float = 1.5) -> None:
    """Give a wrong second delivery time to show up before counting."""
    time.sleep(seconds)


def test_study_by_storescu_gives_a_seg_at_storescp_referencing_every_slice(tmp_path: Path) -> None:
    study = make_study(tmp_path / "study", slices=15, compress_every=4)  # 4 of 15 slices RLE Lossless
    pacs = StoreSCP(tmp_path / "pacs").start()
    node = _node(tmp_path, "--send", pacs.destination, "--allow", "SCANNER", "--allow", "MONITOR")
    with running(node, pacs):
        node.start()
        assert echoscu(node.port, calling="MONITOR").returncode == 0
        refused = echoscu(node.port, calling="INTRUDER")
        assert refused.returncode != 0
        assert "Calling AE Title Not Recognized" in refused.stderr + refused.stdout
        sent = storescu(study.files, node.port, calling="SCANNER")
        assert sent.returncode == 0, sent.stderr
        node.wait_event("job_delivered", timeout=120)
        received = pacs.received_by_class()
        assert [len(received.get(m, [])) for m in ("SEG", "SR")] == [1, 1]
        seg = received["SEG"][0]
        assert seg_references(seg) == set(study.sop_uids)
        assert str(seg.StudyInstanceUID) == study.study_uid
        summary = json.loads((tmp_path / "out" / study.study_uid / study.series_uid / "summary.json").read_text())
        assert summary["exit_code"] == 0 and summary["n_slices_segmented"] == 15
        spooled = [pydicom.dcmread(p, stop_before_pixels=True) for p in (node.spool / "done").rglob("*.dcm")]
        assert sorted(str(d.file_meta.TransferSyntaxUID) for d in spooled).count(RLELossless) == 4  # stored as sent
        code, status = _status(node.spool)
        assert code == 0 and status["running"] is True
        assert status["last_study"]["study"] == study.study_uid and status["queue_length"] == 0
        rejected = node.events("association_rejected")
        assert [(e["reason"], e["calling_ae"]) for e in rejected] == [("calling_ae_not_allowed", "INTRUDER")]
        assert storescu(study.files, node.port).returncode == 0  # the scanner sends the series again
        node.wait_event("series_duplicate", timeout=30)
        _settle()
        assert len(pacs.received()) == 2 and len(node.events("job_started")) == 1
        sagittal = make_study(tmp_path / "sagittal", slices=2, sagittal=True)  # the rest of a pushed study
        assert storescu(sagittal.files, node.port).returncode == 0
        skipped = node.wait_event("job_skipped", timeout=60)[0]
        assert skipped["series"] == sagittal.series_uid and "sagittal" in skipped["reason"]
        node.wait_event("job_delivered", count=2, timeout=30)
        assert len(pacs.received()) == 2 and node.events("job_failed") == []
        assert node.terminate() == 0
    stopped = node.events("node_stopped")[-1]
    assert stopped["left_in_spool"] == {"series_waiting": 0, "queue_length": 0, "outbox_pending": 0, "held_instances": 0}
    code, status = _status(node.spool)
    assert code == 1 and status["running"] is False
    for line in node.log.read_text().splitlines():  # every line one JSON object with a time and an event
        record = json.loads(line)
        assert record["ts"].endswith("Z") and record["event"]


def test_sigkill_during_receive_loses_no_acknowledged_instance(tmp_path: Path) -> None:
    study = make_study(tmp_path / "study", slices=6)
    pacs = StoreSCP(tmp_path / "pacs").start()
    node = _node(tmp_path, "--send", pacs.destination)
    with running(node, pacs):
        node.start()
        with contextlib.suppress(Exception):  # the association dies with the node
            statuses = pynetdicom_send(study.files[:3], node.port, before_end=node.kill)
            assert statuses == [0, 0, 0]
        assert len(node.events("instance_stored")) == 3
        node.start()
        recovered = node.events("recovered")[-1]
        assert recovered["held"] == 1
        time.sleep(3 * float(QUIET))
        assert node.events("series_complete") == []  # held: not processed as if complete
        assert storescu(study.files[3:], node.port).returncode == 0  # the scanner resumes with the rest
        node.wait_event("job_delivered", timeout=120)
        _settle()
        segs = pacs.received_by_class()["SEG"]
        assert len(segs) == 1 and seg_references(segs[0]) == set(study.sop_uids)


def test_sigkill_during_processing_runs_the_series_once(tmp_path: Path) -> None:
    study = make_study(tmp_path / "study", slices=6)
    pacs = StoreSCP(tmp_path / "pacs").start()
    node = _node(tmp_path, "--send", pacs.destination)
    with running(node, pacs):
        node.start()
        assert storescu(study.files, node.port).returncode == 0
        node.wait_event("job_started", timeout=60)
        node.kill()
        assert node.events("job_done") == [] and pacs.received() == []
        node.start()
        assert node.events("recovered")[-1]["jobs_resumed"] == 1
        node.wait_event("job_delivered", timeout=120)
        _settle()
        received = pacs.received_by_class()
        assert [len(received.get(m, [])) for m in ("SEG", "SR")] == [1, 1]
        assert seg_references(received["SEG"][0]) == set(study.sop_uids)
        assert [e["attempt"] for e in node.events("job_started")] == [1, 2]


def test_destination_down_keeps_results_queued_across_a_restart_and_delivers_once(tmp_path: Path) -> None:
    study = make_study(tmp_path / "study", slices=6)
    pacs = StoreSCP(tmp_path / "pacs", port=free_port())  # not started yet: this PACS is down
    archive = StoreSCP(tmp_path / "archive", ae_title="ARCHIVE").start()  # a second destination, up
    node = _node(tmp_path, "--send", pacs.destination, "--send", archive.destination)
    with running(node, pacs, archive):
        node.start()
        assert storescu(study.files, node.port).returncode == 0
        node.wait_event("job_done", timeout=120)
        failed = node.wait_event("send_failed", count=3, timeout=60)
        assert [e["retry_in_s"] for e in failed[:3]] == [0.3, 0.6, 1.0]  # doubling, capped
        assert {e["destination"] for e in failed} == {pacs.destination} and "association" in failed[0]["error"]
        assert len(archive.received_by_class()["SEG"]) == 1  # the destination that is up is not held back
        node.kill()  # processed, not sent everywhere
        pacs.start()
        node.start()
        assert node.events("recovered")[-1]["outbox"] == 1
        node.wait_event("job_delivered", timeout=60)
        _settle()
        for destination in (pacs, archive):
            received = destination.received_by_class()
            assert [len(received.get(m, [])) for m in ("SEG", "SR")] == [1, 1]
        assert len(node.events("job_started")) == 1  # sent from the outbox, not processed again


def test_aborted_association_is_held_until_the_series_arrives_cleanly(tmp_path: Path) -> None:
    study = make_study(tmp_path / "study", slices=6)
    pacs = StoreSCP(tmp_path / "pacs").start()
    node = _node(tmp_path, "--send", pacs.destination)
    with running(node, pacs):
        node.start()
        assert pynetdicom_send(study.files[:3], node.port, end="abort") == [0, 0, 0]
        held = node.wait_event("association_held", timeout=30)[0]
        assert held["instances"] == 3 and held["reason"] == "aborted or connection lost"
        time.sleep(3 * float(QUIET))
        assert node.events("series_complete") == []
        assert storescu(study.files[3:], node.port).returncode == 0
        node.wait_event("job_delivered", timeout=120)
        _settle()
        segs = pacs.received_by_class()["SEG"]
        assert len(segs) == 1 and seg_references(segs[0]) == set(study.sop_uids)


@contextlib.contextmanager
def _small_filesystem(folder: Path, size_mb: int) -> Iterator[Path]:
    folder.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(folder)],
                             capture_output=True, text=True, timeout=30, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs for the full-disk case ({mounted.stderr.strip() or 'not root'})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=30, check=False)


@pytest.mark.skipif(shutil.which("mount") is None, reason="no mount command for the full-disk case")
def test_disk_that_fills_up_refuses_instances_and_associations_and_loses_nothing(tmp_path: Path) -> None:
    study = make_study(tmp_path / "study", slices=12)
    pacs = StoreSCP(tmp_path / "pacs").start()
    with _small_filesystem(tmp_path / "small", 3) as small:
        node = _node(tmp_path, "--send", pacs.destination, "--min-free-mb", "1", spool=small / "spool")
        with running(node, pacs):
            node.start()
            sent = storescu(study.files, node.port)  # storescu halts at the first refused instance
            assert sent.returncode != 0
            stored = {e["sop"] for e in node.events("instance_stored")}
            refused = node.events("instance_refused")
            assert 0 < len(stored) < 12 and len(refused) == 1
            assert {e["status"] for e in refused} == {"0xA700"}
            node.wait_event("association_held", timeout=30)
            (small / "other-files").write_bytes(bytes(shutil.disk_usage(small).free - 8192))  # the disk fills further
            probe = echoscu(node.port)
            assert probe.returncode != 0
            assert "Rejected Transient" in probe.stderr and "Local Limit Exceeded" in probe.stderr, probe.stderr
            assert node.events("association_rejected")[-1]["reason"] == "disk_low"
            assert node.events("series_complete") == []  # an incomplete delivery is not processed
            subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True, timeout=30)  # space is added
            assert echoscu(node.port).returncode == 0
            rest = [f for f, sop in zip(study.files, study.sop_uids, strict=True) if sop not in stored]
            assert storescu(rest, node.port).returncode == 0
            node.wait_event("job_delivered", timeout=120)
            _settle()
            segs = pacs.received_by_class()["SEG"]
            assert len(segs) == 1 and seg_references(segs[0]) == set(study.sop_uids)
            node.terminate()


def test_sigterm_drains_the_job_in_progress_and_its_delivery(tmp_path: Path) -> None:
    # 40 slices: the job must still be running when SIGTERM lands (a 6-slice job once finished first)
    study = make_study(tmp_path / "study", slices=40)
    pacs = StoreSCP(tmp_path / "pacs").start()
    node = _node(tmp_path, "--send", pacs.destination)
    with running(node, pacs):
        node.start()
        assert storescu(study.files, node.port).returncode == 0
        node.wait_event("job_started", timeout=60)
        assert node.terminate(timeout=90) == 0
        steps = ["node_draining", "job_done", "job_delivered", "node_stopped"]
        assert [e["event"] for e in node.events() if e["event"] in steps] == steps
        assert len(pacs.received_by_class()["SEG"]) == 1
        assert echoscu(node.port).returncode != 0  # no longer listening


def test_watch_folder_feeds_the_same_worker(tmp_path: Path) -> None:
    study = make_study(tmp_path / "study", slices=6)
    watch = tmp_path / "drop"
    watch.mkdir()
    pacs = StoreSCP(tmp_path / "pacs").start()
    node = _node(tmp_path, "--no-scp", "--watch", str(watch), "--send", pacs.destination)
    with running(node, pacs):
        node.start()
        shutil.copytree(tmp_path / "study", watch / "lumbar")
        node.wait_event("job_delivered", timeout=120)
        assert not (watch / "lumbar").exists()  # moved into the spool, not processed in place
        summary = json.loads((tmp_path / "out" / study.study_uid / "watch-lumbar" / "summary.json").read_text())
        assert summary["n_slices_segmented"] == 6
        segs = pacs.received_by_class()["SEG"]
        assert len(segs) == 1 and seg_references(segs[0]) == set(study.sop_uids)
        wait_for(lambda: node.terminate() == 0, 60, "a clean stop")
