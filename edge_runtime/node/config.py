"""Validated settings of one `edge-seg serve` node and its `--send` destinations."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.inputs import safe_name

DEFAULT_FORMATS = "seg,sr,report"  # what PACS gets, and the report; key images, PNG, NPY, overlays on request
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # DICOM AE: 16 chars, printable, no backslash


class NodeConfigError(ValueError):
    """A bad `edge-seg serve` option (exit status 2); the message names the value."""


def check_ae_title(title: str, what: str = "AE title") -> str:
    """A DICOM AE title (1-16 printable characters, no backslash, not all spaces) or NodeConfigError."""
    if not _AE_TITLE.match(title) or not title.strip():
        raise NodeConfigError(f"{what} {title!r} is not a DICOM AE title (1-16 printable characters, no backslash)")
    return title.strip()


@dataclass(frozen=True)
class Destination:
    """A C-STORE SCP that receives the results (a PACS), given as AE@HOST:PORT."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        """'PACS@10.0.0.5:104' -> Destination('PACS', '10.0.0.5', 104); errors name the text and the rule."""
        ae, at, address = text.rpartition("@")
        host, colon, port = address.rpartition(":")
        if not at or not colon or not ae or not host:
            raise NodeConfigError(f"--send {text!r}: expected AE@HOST:PORT, e.g. PACS@127.0.0.1:104")
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise NodeConfigError(f"--send {text!r}: port {port!r} is not a number from 1 to 65535")
        return cls(check_ae_title(ae, f"--send {text!r}: AE title"), host.strip("[]"), int(port))

    @property
    def key(self) -> str:
        """A file-name-safe identity, for the per-destination delivery records."""
        return safe_name(f"{self.ae_title}@{self.host}_{self.port}", fallback="destination")

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class NodeConfig:
    """Everything the node's parts need; built and validated once by `serve_command`."""

    spool: Path
    output: Path
    ae_title: str = "EDGESEG"
    host: str = "0.0.0.0"
    port: int = 11112
    scp: bool = True
    allowed_aets: tuple[str, ...] = ()  # empty: any calling AE (logged as a warning at start)
    destinations: tuple[Destination, ...] = ()
    watch: Path | None = None
    quiet_seconds: float = 5.0
    min_free_mb: int = 500
    model: Path | None = None
    backend: str = "auto"
    threads: int | None = None
    batch_size: int = 8
    formats: str = DEFAULT_FORMATS
    ts_relative_mm2: float = 100.0
    ts_absolute_mm2: float = 75.0
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 60.0
    drain_seconds: float = 20.0
    network_timeout: float = 60.0
    retain_hours: float = 24.0
    max_associations: int = 8
    max_attempts: int = 3
    log_path: Path | None = None

    def validate(self) -> NodeConfig:
        """Raise NodeConfigError naming the first bad value; returns self for chaining."""
        check_ae_title(self.ae_title, "--ae-title")
        for title in self.allowed_aets:
            check_ae_title(title, "--allow")
        if not 0 <= self.port <= 65535:
            raise NodeConfigError(f"--port {self.port} is not from 0 to 65535")
        checks = [
            (self.quiet_seconds > 0, f"--quiet-seconds must be > 0, got {self.quiet_seconds}"),
            (self.min_free_mb >= 0, f"--min-free-mb must be >= 0, got {self.min_free_mb}"),
            (self.retry_base_seconds > 0, f"--retry-seconds must be > 0, got {self.retry_base_seconds}"),
            (self.retry_max_seconds >= self.retry_base_seconds, "--retry-max-seconds must be >= --retry-seconds"),
            (self.drain_seconds >= 0, f"--drain-seconds must be >= 0, got {self.drain_seconds}"),
            (self.network_timeout > 0, f"--network-timeout must be > 0, got {self.network_timeout}"),
            (self.max_associations >= 1, f"--max-associations must be >= 1, got {self.max_associations}"),
            (self.scp or self.watch is not None, "nothing to receive: --no-scp needs --watch DIR"),
        ]
        for ok, message in checks:
            if not ok:
                raise NodeConfigError(message)
        if self.watch is not None and not self.watch.is_dir():
            raise NodeConfigError(f"--watch {self.watch} is not a folder")
        return self
