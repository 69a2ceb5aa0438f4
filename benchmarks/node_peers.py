"""Real peers for the DICOM node on 127.0.0.1, shared by tests/test_serve*.py and benchmarks/node_bench.py.

dcmtk's `storescu` plays the scanner, `storescp` the PACS, `echoscu` a monitoring probe;
`edge-seg serve` runs as its own process (so it can be SIGKILLed). Studies are made from the
bundled example series with fresh UIDs. Every wait here is bounded.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import RLELossless, generate_uid

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_STUDY = REPO / "examples" / "study"
DCMTK_TOOLS = ("storescu", "storescp", "echoscu")


@functools.cache
def dcmtk(name: str) -> str | None:
    """Path of dcmtk's `name`: the first native executable of that name on PATH.

    pynetdicom installs Python console scripts called storescp, storescu, echoscu ... into the
    virtual environment; with the venv activated they come first on PATH and take other options.
    """
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(folder or ".") / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            with open(candidate, "rb") as handle:
                if handle.read(4) == b"\x7fELF":
                    return str(candidate)
    return None


def missing_tools(tools: tuple[str, ...] = DCMTK_TOOLS) -> list[str]:
    return [t for t in tools if dcmtk(t) is None]


def free_port() -> int:
    """A port nothing listens on right now (bound and released; small race, fine on loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll `predicate` until truthy or `timeout` s; raises TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@dataclass
class StudyFiles:
    """One synthetic study on disk: one series, `files` in slice order."""

    study_uid: str
    series_uid: str
    sop_uids: list[str]
    files: list[Path]


def make_study(folder: Path, slices: int = 15, patient: str = "NODE001", sagittal: bool = False,
               compress_every: int = 0) -> StudyFiles:
    """`slices` axial MR slices cycled from the example series, one series, new UIDs, 6.8 mm apart.

    `sagittal`: the same pixels labelled as a sagittal series (a pushed study has those too).
    `compress_every`: every k-th slice RLE Lossless (storescu then proposes that transfer syntax).
    """
    sources = sorted(EXAMPLE_STUDY.glob("*.ima"))
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    files, sops = [], []
    for index in range(slices):
        ds = pydicom.dcmread(sources[index % len(sources)])
        sop = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.InstanceNumber = index + 1
        ds.PatientID = patient
        x, y, _ = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, round(50.0 - 6.8263 * index, 4)]
        ds.SliceLocation = round(50.0 - 6.8263 * index, 4)
        if sagittal:
            ds.ImageOrientationPatient = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
            ds.SeriesDescription = "T2_TSE_SAG"
        if compress_every and index % compress_every == 0:
            ds.compress(RLELossless, generate_instance_uid=False)  # keep the UID set above
        path = folder / f"IM_{index + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
        sops.append(sop)
    return StudyFiles(study_uid, series_uid, sops, files)


def storescu(files: list[Path], port: int, called: str = "EDGESEG", calling: str = "SCANNER",
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Send `files` in one association with dcmtk's storescu (as a scanner does; -xr: RLE Lossless proposed too)."""
    return subprocess.run(
        [dcmtk("storescu") or "storescu", "-xr", "-aet", calling, "-aec", called, "-to", "20", "-ta", "20",
         "127.0.0.1", str(port), *[str(f) for f in files]],
        capture_output=True, text=True, timeout=timeout, check=False,
    )


def echoscu(port: int, called: str = "EDGESEG", calling: str = "MONITOR",
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([dcmtk("echoscu") or "echoscu", "-aet", calling, "-aec", called, "-to", "10", "-ta", "10",
                           "127.0.0.1", str(port)],
                          capture_output=True, text=True, timeout=timeout, check=False)


class StoreSCP:
    """dcmtk's storescp as the PACS: every received instance a separate file (-uf), in arrival order."""

    def __init__(self, folder: Path, port: int | None = None, ae_title: str = "PACS") -> None:
        self.folder = Path(folder)
        self.port = port or free_port()
        self.ae_title = ae_title
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> StoreSCP:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [dcmtk("storescp") or "storescp", "-aet", self.ae_title, "-od", str(self.folder), "-uf", "+xa", "-fe", ".dcm",
             str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: echoscu(self.port, called=self.ae_title).returncode == 0, 20, "storescp to answer C-ECHO", 0.1)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    @property
    def destination(self) -> str:
        return f"{self.ae_title}@127.0.0.1:{self.port}"

    def received(self) -> list[Path]:
        return sorted(p for p in self.folder.glob("*.dcm") if p.is_file())

    def received_by_class(self) -> dict[str, list[pydicom.Dataset]]:
        """Received instances grouped by modality (SEG, SR, OT for the key images)."""
        groups: dict[str, list[pydicom.Dataset]] = {}
        for path in self.received():
            with contextlib.suppress(Exception):
                ds = pydicom.dcmread(path, stop_before_pixels=True)
                groups.setdefault(str(ds.Modality), []).append(ds)
        return groups


@dataclass
class NodeProcess:
    """`edge-seg serve` in its own process, its JSON-lines log in a file."""

    spool: Path
    output: Path
    log: Path
    port: int = field(default_factory=free_port)
    args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    stderr_path: Path | None = None

    def command(self) -> list[str]:
        exe = Path(sys.executable).with_name("edge-seg")
        base = [str(exe)] if exe.exists() else [sys.executable, "-c", "from edge_runtime.cli import main; main()"]
        return [*base, "serve", "--spool", str(self.spool), "-o", str(self.output), "--host", "127.0.0.1",
                "--port", str(self.port), "--log", str(self.log), *self.args]

    def start(self, timeout: float = 120) -> NodeProcess:
        started_before = len(self.events("node_started"))
        self.stderr_path = self.log.with_suffix(".stderr")
        with open(self.stderr_path, "ab") as err:
            self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=err,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wait_for(lambda: len(self.events("node_started")) > started_before or self.process.poll() is not None,
                 timeout, "the node to start", 0.05)
        if self.process.poll() is not None:
            raise RuntimeError(f"the node exited with {self.process.returncode}: {self.stderr()[-2000:]}")
        return self

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path and self.stderr_path.exists() else ""

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every log record so far (of event `name`), re-read from the file."""
        if not self.log.exists():
            return []
        records = []
        for line in self.log.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                if name is None or record["event"] == name:
                    records.append(record)
        return records

    def wait_event(self, name: str, count: int = 1, timeout: float = 60) -> list[dict[str, Any]]:
        def enough() -> list[dict[str, Any]] | None:
            found = self.events(name)
            if len(found) >= count:
                return found
            if self.process is not None and self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"the node exited ({code}) before {count} x {name}: {self.stderr()[-2000:]}")
            return None

        return wait_for(enough, timeout, f"{count} x {name} in the node log")

    def kill(self) -> None:
        """SIGKILL: no handler runs, no file is closed cleanly."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=20)

    def terminate(self, timeout: float = 60) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def rss_kb(self) -> int:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0


@contextlib.contextmanager
def running(*parts: Any) -> Iterator[None]:
    """Stop every started peer (node killed, storescp terminated) whatever happens in the block."""
    try:
        yield
    finally:
        for part in parts:
            with contextlib.suppress(Exception):
                if isinstance(part, NodeProcess):
                    part.kill()
                else:
                    part.stop()


def pynetdicom_send(files: list[Path], port: int, end: str = "release", before_end: Callable[[], None] | None = None,
                    called: str = "EDGESEG", calling: str = "SCANNER") -> list[int | None]:
    """Send `files` in one association with pynetdicom, then `before_end()`, then 'release' or 'abort'.

    For the cases dcmtk's storescu cannot stage: an abort after some instances, a node killed
    while the association is open. Returns each C-STORE status (None: no answer).
    """
    from pynetdicom import AE
    from pynetdicom.sop_class import MRImageStorage  # type: ignore[attr-defined]

    ae = AE(ae_title=calling)
    ae.add_requested_context(MRImageStorage)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        raise ConnectionError(f"association with 127.0.0.1:{port} not established")
    statuses: list[int | None] = []
    try:
        for path in files:
            status = assoc.send_c_store(path)
            statuses.append(getattr(status, "Status", None))
        if before_end is not None:
            before_end()
    finally:
        if assoc.is_established:
            assoc.abort() if end == "abort" else assoc.release()
    return statuses


def seg_references(seg: pydicom.Dataset) -> set[str]:
    """SOP Instance UIDs of the source images a SEG references."""
    return {
        str(item.ReferencedSOPInstanceUID)
        for series in seg.get("ReferencedSeriesSequence", [])
        for item in series.get("ReferencedInstanceSequence", [])
    }
