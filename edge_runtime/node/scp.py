"""The Storage SCP (pynetdicom): accepts MR images and C-ECHO, writes each instance durably to the
spool before answering success, and tells the tracker when associations end.

Never opens an association itself (pynetdicom #435: an association opened inside an
EVT_C_STORE handler races under load): results leave through `sender` on its own thread.
Refusals: a calling AE not on `--allow` (A-ASSOCIATE-RJ permanent, calling AE not recognised);
free disk below `--min-free-mb` (A-ASSOCIATE-RJ transient, local limit exceeded, and C-STORE
status 0xA700 Out of Resources once inside an association). An association that had an
instance refused, or that was aborted (pynetdicom aborts on `network_timeout`, #619), is held.
"""

from __future__ import annotations

import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    EnhancedMRColorImageStorage,
    EnhancedMRImageStorage,
    LegacyConvertedEnhancedMRImageStorage,
    MRImageStorage,
    Verification,
)

from edge_runtime.node.config import NodeConfig
from edge_runtime.node.log import EventLog
from edge_runtime.node.spool import SeriesKey, Spool, valid_uid
from edge_runtime.node.tracker import SeriesTracker

# What `edge-seg run` decodes (pydicom + pylibjpeg): uncompressed, JPEG, JPEG-LS, JPEG 2000, RLE.
IMAGE_TRANSFER_SYNTAXES = (
    ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian,
    JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1, JPEGLSLossless, JPEGLSNearLossless,
    JPEG2000Lossless, JPEG2000, RLELossless,
)
MR_STORAGE = (MRImageStorage, EnhancedMRImageStorage, EnhancedMRColorImageStorage, LegacyConvertedEnhancedMRImageStorage)
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
# A-ASSOCIATE-RJ (result, source, diagnostic): rejected-transient, service-provider (presentation), local-limit-exceeded
REJECT_DISK_LOW = (0x02, 0x03, 0x02)


class DiskGuard:
    """Free space of the spool's file system against the `--min-free-mb` floor."""

    def __init__(self, folder: Path, min_free_mb: int) -> None:
        self.folder = folder
        self.floor = min_free_mb << 20

    def free(self) -> int:
        return shutil.disk_usage(self.folder).free

    def low(self, incoming: int = 0) -> bool:
        return self.free() - incoming < self.floor


@dataclass
class _Association:
    id: str
    calling_ae: str
    address: str
    keys: set[SeriesKey] = field(default_factory=set)
    stored: int = 0
    refused: int = 0
    ended: bool = False


class StorageSCP:
    """One AE title on one port; `start` listens in the background, `stop_listening` refuses new peers."""

    def __init__(self, config: NodeConfig, spool: Spool, tracker: SeriesTracker, log: EventLog,
                 on_stored: Callable[[], None] | None = None) -> None:
        self.config = config
        self.spool = spool
        self.tracker = tracker
        self.log = log
        self.guard = DiskGuard(spool.root, config.min_free_mb)
        self.on_stored = on_stored
        self._associations: dict[int, _Association] = {}
        self._lock = threading.Lock()
        self.ae = AE(ae_title=config.ae_title)
        self.ae.maximum_associations = config.max_associations
        self.ae.network_timeout = config.network_timeout
        self.ae.acse_timeout = 30
        self.ae.dimse_timeout = 60
        if config.allowed_aets:
            self.ae.require_calling_aet = list(config.allowed_aets)
        self.ae.add_supported_context(Verification)
        for sop_class in MR_STORAGE:
            self.ae.add_supported_context(sop_class, list(IMAGE_TRANSFER_SYNTAXES))
        self._server: Any = None
        self.port: int | None = None

    def start(self) -> int:
        """Listen; returns the bound port (useful with --port 0)."""
        handlers = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_CONN_CLOSE, self._on_closed),
        ]
        self._server = self.ae.start_server((self.config.host, self.config.port), block=False, evt_handlers=handlers)
        self.port = int(self._server.server_address[1])
        return self.port

    def active(self) -> int:
        return len(self._server.active_associations) if self._server is not None else 0

    def stop_listening(self) -> None:
        """Close the listening socket; associations in progress carry on until they end."""
        if self._server is not None:
            self._server.shutdown()

    def wait_idle(self, deadline: float) -> bool:
        """Wait (until the monotonic `deadline`) for the associations in progress; True when none is left."""
        while self.active() and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self.active()

    # ------------------------------------------------------------------ association events

    def _state(self, event: evt.Event) -> _Association:
        assoc = event.assoc
        with self._lock:
            state = self._associations.get(id(assoc))
            if state is None:
                state = _Association(
                    id=f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}",
                    calling_ae=str(assoc.requestor.ae_title).strip(),
                    address=f"{assoc.requestor.address}:{assoc.requestor.port}",
                )
                self._associations[id(assoc)] = state
            return state

    def _on_requested(self, event: evt.Event) -> None:
        if self.guard.low():
            self.log("association_rejected", reason="disk_low", free_mb=self.guard.free() >> 20,
                     min_free_mb=self.config.min_free_mb, calling_ae=_calling(event), peer=_peer(event))
            event.assoc.acse.send_reject(*REJECT_DISK_LOW)
            event.assoc.kill()  # as pynetdicom does after its own rejections: waits until the A-ASSOCIATE-RJ is out

    def _on_rejected(self, event: evt.Event) -> None:
        """pynetdicom's own rejections: the allow-list (require_calling_aet) or --max-associations."""
        calling = _calling(event)
        allowed = not self.config.allowed_aets or calling in self.config.allowed_aets
        reason = "too_many_associations" if allowed else "calling_ae_not_allowed"
        self.log("association_rejected", reason=reason, calling_ae=calling, peer=_peer(event))
        with self._lock:
            self._associations.pop(id(event.assoc), None)

    def _on_accepted(self, event: evt.Event) -> None:
        state = self._state(event)
        self.log("association_accepted", association=state.id, calling_ae=state.calling_ae, peer=state.address)

    def _on_echo(self, event: evt.Event) -> int:
        self.log("echo", association=self._state(event).id, calling_ae=_calling(event))
        return 0x0000

    def _on_store(self, event: evt.Event) -> int | Dataset:
        state = self._state(event)
        started = time.perf_counter()
        try:
            data = event.encoded_dataset()
        except Exception as exc:  # a peer's malformed message: refuse this instance only
            return self._refuse(state, CANNOT_UNDERSTAND, f"cannot read the dataset ({type(exc).__name__}: {exc})")
        if self.guard.low(len(data)):
            state.refused += 1
            self.log("instance_refused", association=state.id, reason="disk_low", free_mb=self.guard.free() >> 20,
                     min_free_mb=self.config.min_free_mb, status=f"0x{OUT_OF_RESOURCES:04X}")
            return _status(OUT_OF_RESOURCES, f"free disk below {self.config.min_free_mb} MB")
        try:
            ds = event.dataset
            study, series, sop = ds.get("StudyInstanceUID"), ds.get("SeriesInstanceUID"), ds.get("SOPInstanceUID")
        except Exception as exc:
            return self._refuse(state, CANNOT_UNDERSTAND, f"cannot decode the dataset ({type(exc).__name__}: {exc})")
        bad = [name for name, value in (("StudyInstanceUID", study), ("SeriesInstanceUID", series),
                                         ("SOPInstanceUID", sop)) if not valid_uid(str(value) if value else None)]
        if bad:
            return self._refuse(state, CANNOT_UNDERSTAND, f"missing or invalid {', '.join(bad)}")
        key = SeriesKey(str(study), str(series))
        try:
            self.spool.store_instance(state.id, key, str(sop), data)
        except OSError as exc:  # ENOSPC between the check and the write, or a failing disk
            state.refused += 1
            self.log("instance_refused", association=state.id, reason="write_failed", error=str(exc),
                     status=f"0x{OUT_OF_RESOURCES:04X}")
            return _status(OUT_OF_RESOURCES, f"cannot write the instance ({exc.strerror})")
        state.keys.add(key)
        state.stored += 1
        self.tracker.instance(key, state.id)
        self.log("instance_stored", association=state.id, study=key.study, series=key.series, sop=str(sop),
                 bytes=len(data), ms=round(1000 * (time.perf_counter() - started), 2))
        if self.on_stored is not None:
            self.on_stored()
        return 0x0000

    def _refuse(self, state: _Association, status: int, reason: str) -> Dataset:
        state.refused += 1
        self.log("instance_refused", association=state.id, reason=reason, status=f"0x{status:04X}")
        return _status(status, reason)

    def _on_released(self, event: evt.Event) -> None:
        self._end(event, released=True)

    def _on_aborted(self, event: evt.Event) -> None:
        self._end(event, released=False)

    def _on_closed(self, event: evt.Event) -> None:
        self._end(event, released=False)  # no-op when released or aborted already

    def _end(self, event: evt.Event, released: bool) -> None:
        with self._lock:
            state = self._associations.pop(id(event.assoc), None)
        if state is None or state.ended:
            return
        state.ended = True
        keys = sorted(state.keys)
        why = "aborted or connection lost" if not released else "released after refused instances"
        if released and not state.refused:
            try:
                self.spool.release(state.id)
            except OSError as exc:  # no room even for the marker: hold (a rename needs none); a resend completes it
                self.log("release_failed", association=state.id, error=str(exc))
                released, why = False, f"released, but recording it failed ({exc.strerror})"
        if released and not state.refused:
            self.tracker.association_ended(state.id, keys, released=True)
            self.log("association_released", association=state.id, calling_ae=state.calling_ae, instances=state.stored,
                     series=[str(k) for k in keys])
            return
        held = self.spool.hold(state.id)
        self.tracker.association_ended(state.id, keys, released=False)
        self.log("association_held", association=state.id, calling_ae=state.calling_ae, reason=why, instances=held,
                 refused=state.refused, series=[str(k) for k in keys])


def _status(code: int, comment: str) -> Dataset:
    status = Dataset()
    status.Status = code
    status.ErrorComment = comment[:64]
    return status


def _calling(event: evt.Event) -> str:
    try:
        return str(event.assoc.requestor.primitive.calling_ae_title).strip()
    except AttributeError:
        return str(event.assoc.requestor.ae_title).strip()


def _peer(event: evt.Event) -> str:
    return f"{event.assoc.requestor.address}:{event.assoc.requestor.port}"
