"""highdicom's module -> attributes table of the DICOM standard, read one module at a time.

highdicom parses a 22.7 MB JSON file (all 436 modules of the standard: ~110 MB of Python
objects, 0.2-0.5 s) the first time it checks an attribute, although a SEG or an SR looks at a
few dozen modules. `install()` splits that file once into a per-module cache in the user cache
folder and points highdicom's loader at a mapping that parses only the modules it is asked for.
The values are the same objects highdicom would have built, so the SEG and SR do not change. It
applies only when highdicom's loader is exactly the cached function this was written against
(highdicom 0.2x); otherwise nothing is touched and highdicom loads its table as usual.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import threading
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

INDEX_SCHEMA = "edge-seg-highdicom-module-index/1"
_LOCK = threading.Lock()
_installed: LazyModuleMap | None = None


class LazyModuleMap(Mapping[str, list]):
    """Read-only module -> attribute-list mapping that parses each module on first access."""

    def __init__(self, data_path: Path, entries: dict[str, list[int]]) -> None:
        self._data_path = data_path
        self._entries = entries
        self._loaded: dict[str, list] = {}

    def __getitem__(self, key: str) -> list:
        value = self._loaded.get(key)
        if value is None:
            offset, length = self._entries[key]  # KeyError for an unknown module, as a dict would
            with open(self._data_path, "rb") as handle:
                handle.seek(offset)
                value = json.loads(handle.read(length))
            self._loaded[key] = value
        return value

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def loaded(self) -> list[str]:
        """Modules parsed so far (what highdicom actually needed)."""
        return list(self._loaded)


def _source() -> Path | None:
    spec = importlib.util.find_spec("highdicom")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "_standard" / "module_attribute_map.json"
    return path if path.is_file() else None


def _cache_files() -> tuple[Path, Path]:
    from edge_runtime.user_cache import cache_dir

    folder = cache_dir() / f"highdicom-{metadata.version('highdicom')}"
    return folder / "module_attribute_map.index.json", folder / "module_attribute_map.data"


def _read_index(index_path: Path, data_path: Path, source: Path) -> dict[str, list[int]] | None:
    try:
        index = json.loads(index_path.read_text())
        stat = source.stat()
        if (
            index.get("schema") == INDEX_SCHEMA
            and index.get("source_size") == stat.st_size
            and index.get("source_mtime_ns") == stat.st_mtime_ns
            and index.get("data_size") == data_path.stat().st_size
        ):
            return index["entries"]
    except (OSError, ValueError, AttributeError):
        pass
    return None


def _build_index(index_path: Path, data_path: Path, source: Path) -> dict[str, list[int]]:
    """Split the source table into one JSON value per module (paid once per highdicom version)."""
    from edge_runtime.atomic import atomic_write_bytes, atomic_write_json

    table = json.loads(source.read_bytes())
    chunks, entries, offset = [], {}, 0
    for key, value in table.items():
        chunk = json.dumps(value, separators=(",", ":")).encode("utf-8")
        entries[key] = [offset, len(chunk)]
        chunks.append(chunk)
        offset += len(chunk)
    stat = source.stat()
    atomic_write_bytes(data_path, b"".join(chunks))
    atomic_write_json(index_path, {
        "schema": INDEX_SCHEMA, "source": str(source), "source_size": stat.st_size,
        "source_mtime_ns": stat.st_mtime_ns, "data_size": offset, "entries": entries,
    })
    return entries


def lazy_module_map() -> LazyModuleMap | None:
    """The per-module view of the installed highdicom's table (building its cache if needed), or
    None when highdicom or a writable cache folder is missing."""
    source = _source()
    if source is None:
        return None
    try:
        index_path, data_path = _cache_files()
        entries = _read_index(index_path, data_path, source) or _build_index(index_path, data_path, source)
    except (OSError, ValueError, metadata.PackageNotFoundError):
        return None
    return LazyModuleMap(data_path, entries)


def install() -> LazyModuleMap | None:
    """Point highdicom's table loader at the lazy mapping; returns it, or None if not applied."""
    global _installed
    with _LOCK:
        if _installed is not None:
            return _installed
        try:
            standard = importlib.import_module("highdicom._standard_utils")
            users = [standard, importlib.import_module("highdicom.base"), importlib.import_module("highdicom.image")]
        except ImportError:
            return None
        original = getattr(standard, "get_module_attribute_map", None)
        cache_info = getattr(original, "cache_info", None)
        if cache_info is None or any(getattr(m, "get_module_attribute_map", None) is not original for m in users):
            return None  # not the loader this was written against
        if cache_info().currsize:
            return None  # the full table is already in memory: nothing left to save
        mapping = lazy_module_map()
        if mapping is None:
            return None

        def get_module_attribute_map() -> Mapping[str, list]:
            return mapping

        for module in users:
            module.get_module_attribute_map = get_module_attribute_map
        _installed = mapping
        return mapping


def import_highdicom() -> Any:
    """`import highdicom` with the lazy standard table installed (the target of the background import)."""
    module = importlib.import_module("highdicom")
    install()
    return module
