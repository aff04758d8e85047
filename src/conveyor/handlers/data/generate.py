"""Generate the sample store master shipped with Conveyor (reference 002).

Made-up but plausible shops: IDs ``RP00001``.. in order, a six-digit postal area code around
a handful of Indian cities, and a shop name from a few common parts. A fixed seed makes the
output identical on every run, so the shipped file can be checked against this script.

    python -m conveyor.handlers.data.generate [PATH]   # default: next to this file
"""

from __future__ import annotations

import csv
import io
import random
import sys
from pathlib import Path

STORE_COUNT = 1000
SEED = 2002
FILE_NAME = "store_master.csv"
HEADER = ("AreaCode", "StoreName", "StoreID")

# First three digits of real postal-code regions; the last three are drawn per area.
_AREA_PREFIXES = ("400", "110", "560", "600", "700", "500", "411", "380", "302", "226")
_FIRST = (
    "Shree", "New", "Jai", "Sai", "Om", "Laxmi", "Ganesh", "Balaji", "Krishna", "Durga",
    "Royal", "City", "Famous", "Annapurna", "Mahalaxmi", "Gupta", "Sharma", "Patel", "Raj",
)  # fmt: skip
_SECOND = (
    "", "Ganesh", "Ram", "Hari", "Shiv", "Vinayak", "Sagar", "Krupa", "Deep", "Kamal",
)  # fmt: skip
_KIND = (
    "Kirana Store", "General Store", "Provision Store", "Supermart", "Traders",
    "Mini Mart", "Stores", "Departmental Store", "Bazaar", "Grocers",
)  # fmt: skip


def rows(count: int = STORE_COUNT, seed: int = SEED) -> list[tuple[str, str, str]]:
    """``(AreaCode, StoreName, StoreID)`` for ``count`` stores, the same for the same seed."""
    rng = random.Random(seed)
    areas = [f"{prefix}{rng.randrange(1, 100):03d}" for prefix in _AREA_PREFIXES for _ in range(6)]
    out = []
    for number in range(1, count + 1):
        name = " ".join(part for part in (rng.choice(_FIRST), rng.choice(_SECOND)) if part)
        out.append((rng.choice(areas), f"{name} {rng.choice(_KIND)}", f"RP{number:05d}"))
    return out


def render(count: int = STORE_COUNT, seed: int = SEED) -> str:
    """The CSV text (``\\n`` line ends, so the file is the same on every platform)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(rows(count, seed))
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0]) if args else Path(__file__).with_name(FILE_NAME)
    target.write_text(render(), encoding="utf-8", newline="")
    print(f"wrote {STORE_COUNT} stores to {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
