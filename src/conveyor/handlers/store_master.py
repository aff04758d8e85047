"""The store master of reference 002: which store IDs exist (CSV ``AreaCode,StoreName,StoreID``).

The file is ``STORE_MASTER_PATH``, or the generated sample shipped in ``conveyor.handlers.data``.
A configured file is read again when its modification time or size changes, so operators can
replace it without a restart; replace it atomically (write a new file, then rename it over the
old one) so no job reads half a file.
"""

from __future__ import annotations

import csv
import io
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from conveyor.errors import ConfigurationError

SAMPLE_PACKAGE = "conveyor.handlers.data"
SAMPLE_FILE = "store_master.csv"
COLUMNS = ("AreaCode", "StoreName", "StoreID")


@dataclass(frozen=True, slots=True)
class Store:
    store_id: str
    name: str
    area_code: str


class StoreMaster(Mapping[str, Store]):
    """Stores by ID. When an ID appears twice the first row wins (a later row is a mistake
    more often than a correction, and first-wins keeps lookups stable while the file grows)."""

    def __init__(self, stores: Iterable[Store]) -> None:
        self._stores: dict[str, Store] = {}
        for store in stores:
            self._stores.setdefault(store.store_id, store)

    def __getitem__(self, store_id: str) -> Store:
        return self._stores[store_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._stores)

    def __len__(self) -> int:
        return len(self._stores)

    def __contains__(self, store_id: object) -> bool:
        return store_id in self._stores

    @classmethod
    def parse(cls, text: str, source: str = "store master") -> StoreMaster:
        """Read CSV text; columns are found by name (any order, extra columns ignored)."""
        reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff")))
        fields = [name.strip() for name in reader.fieldnames or ()]
        missing = [column for column in COLUMNS if column not in fields]
        if missing:
            raise ConfigurationError(f"{source}: missing column(s) {', '.join(missing)}")
        reader.fieldnames = fields
        return cls(_stores(reader))


def _stores(reader: csv.DictReader[str]) -> Iterator[Store]:
    for row in reader:
        store_id = (row.get("StoreID") or "").strip()
        if store_id:
            yield Store(
                store_id=store_id,
                name=(row.get("StoreName") or "").strip(),
                area_code=(row.get("AreaCode") or "").strip(),
            )


def sample_text() -> str:
    """The shipped sample's CSV text."""
    return resources.files(SAMPLE_PACKAGE).joinpath(SAMPLE_FILE).read_text(encoding="utf-8")


class StoreMasters:
    """Loaded masters by path, each read again once the file changes; safe across threads
    (jobs load it through ``asyncio.to_thread`` so a large file never blocks the loop)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sample: StoreMaster | None = None
        self._files: dict[Path, tuple[tuple[int, int], StoreMaster]] = {}

    def get(self, path: Path | None) -> StoreMaster:
        """The master at ``path`` (the shipped sample for None), current as of this call."""
        with self._lock:
            if path is None:
                if self._sample is None:
                    self._sample = StoreMaster.parse(sample_text(), "the sample store master")
                return self._sample
            return self._file(path)

    def _file(self, path: Path) -> StoreMaster:
        try:
            stat = os.stat(path)
            stamp = (stat.st_mtime_ns, stat.st_size)
            cached = self._files.get(path)
            if cached is not None and cached[0] == stamp:
                return cached[1]
            master = StoreMaster.parse(path.read_text(encoding="utf-8"), str(path))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise ConfigurationError(f"cannot read the store master {path}: {exc}") from exc
        self._files[path] = (stamp, master)
        return master


masters = StoreMasters()
"""The process's masters; handlers share it so each file is parsed once per change."""
