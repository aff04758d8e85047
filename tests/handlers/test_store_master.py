"""The store master: the generated sample ships with the package; a configured file reloads."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import pytest

from conveyor.errors import ConfigurationError
from conveyor.handlers.data import generate
from conveyor.handlers.store_master import (
    SAMPLE_FILE,
    SAMPLE_PACKAGE,
    Store,
    StoreMaster,
    StoreMasters,
    sample_text,
)


def test_the_sample_is_packaged_and_has_the_reference_stores() -> None:
    assert resources.files(SAMPLE_PACKAGE).joinpath(SAMPLE_FILE).is_file()
    master = StoreMasters().get(None)
    assert len(master) == generate.STORE_COUNT
    assert "RP00002" in master and "RP01000" in master and "RP01001" not in master
    store = master["RP00002"]
    assert store.name and store.area_code.isdigit() and len(store.area_code) == 6


def test_the_shipped_sample_is_what_the_generator_writes(tmp_path: Path) -> None:
    assert sample_text() == generate.render()
    target = tmp_path / "stores.csv"
    assert generate.main([str(target)]) == 0
    assert target.read_text(encoding="utf-8") == generate.render()


def test_columns_are_found_by_name_and_the_first_duplicate_wins() -> None:
    text = (
        "\ufeffStoreID, StoreName ,AreaCode,Extra\n"
        "A1,First,100001,x\nA1,Second,100002,y\n,Nameless,1,z\n"
    )
    master = StoreMaster.parse(text)
    assert list(master) == ["A1"]
    assert master["A1"] == Store(store_id="A1", name="First", area_code="100001")


def test_missing_columns_are_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="StoreID"):
        StoreMaster.parse("AreaCode,StoreName\n1,x\n")


def test_a_configured_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "master.csv"
    path.write_text("AreaCode,StoreName,StoreID\n1,One,S1\n")
    masters = StoreMasters()
    first = masters.get(path)
    assert masters.get(path) is first and "S1" in first
    path.write_text("AreaCode,StoreName,StoreID\n1,One,S1\n2,Two,S2\n")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = masters.get(path)
    assert second is not first and "S2" in second


def test_an_unreadable_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read the store master"):
        StoreMasters().get(tmp_path / "absent.csv")
