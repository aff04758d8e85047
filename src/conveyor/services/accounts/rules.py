"""What an account may look like: e-mail and username syntax, roles, who may administer."""

from __future__ import annotations

import re

from conveyor.domain.accounts import Role
from conveyor.errors import Forbidden, InvalidInput
from conveyor.services.accounts.records import User

ROLES: tuple[Role, ...] = ("admin", "user")
MAX_EMAIL_LENGTH = 320  # RFC 5321: 64 for the local part, @, 255 for the domain
MAX_LOCAL_PART_LENGTH = 64

# A deliberately plain check (no e-mail library is installed): ASCII dot-atoms on the left,
# DNS labels with at least one dot on the right. Quoted local parts, IP-literal domains and
# internationalised addresses are refused; whether the address exists is proved by the code
# we mail to it, not by syntax.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})+", re.ASCII)
_USERNAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,149}", re.ASCII)


def normalize_email(email: str) -> str:
    """The stored form of an address (trimmed, lower-cased), or InvalidInput."""
    address = email.strip().lower()
    local, _, _ = address.partition("@")
    if (
        len(address) > MAX_EMAIL_LENGTH
        or len(local) > MAX_LOCAL_PART_LENGTH
        or _EMAIL.fullmatch(address) is None
    ):
        raise InvalidInput("invalid e-mail address", field="email")
    return address


def normalize_username(username: str) -> str:
    """Lower-case letters, digits, ``_``, ``.`` and ``-``: never an ``@``, so never an e-mail."""
    name = username.strip().lower()
    if _USERNAME.fullmatch(name) is None:
        raise InvalidInput(
            "a username is 1 to 150 letters, digits, '_', '.' or '-', starting with a letter "
            "or digit",
            field="username",
        )
    return name


def check_role(role: str) -> Role:
    for known in ROLES:
        if role == known:
            return known
    raise InvalidInput(f"role must be one of {', '.join(ROLES)}", field="role")


def require_admin(user: User) -> None:
    """Refuse a caller who is not an admin (the admin operations below assume one)."""
    if not user.is_admin:
        raise Forbidden("this needs an admin account")
