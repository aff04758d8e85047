"""Accounts in the database: users, one-time codes, refresh tokens and API keys.

The only place account SQL is written; the account service holds the rules. Every statement
runs on SQLite and PostgreSQL alike. Uniqueness is left to the database (``ON CONFLICT DO
NOTHING``), so two processes racing to create the same account cannot both succeed and
neither has to look before it leaps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from typing import Any, Unpack

from sqlalchemy import Row, delete, exists, func, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from conveyor.domain.accounts import ApiKeyRecord, Role, UserChanges, UserRecord, otp_subject
from conveyor.domain.clock import utcnow
from conveyor.domain.ids import uuid7
from conveyor.domain.otp import OtpCheck, OtpRecord
from conveyor.errors import Conflict
from conveyor.store.database import Database
from conveyor.store.tables import api_keys, otp_codes, refresh_tokens, users
from conveyor.store.transaction import Transaction
from conveyor.store.types import UTCDateTime

_FIRST_ADMIN_LOCK = 7230861200413  # PostgreSQL advisory lock id; migrations use ...412


class UserStore:
    """Account persistence for one database; instances are safe to share in a process."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _read(self, tx: Transaction | None) -> AbstractAsyncContextManager[AsyncConnection]:
        """The caller's transaction when given (its check commits with its change), else a read."""
        return _borrowed(tx.connection) if tx is not None else self.db.read()

    def _write(self, tx: Transaction | None) -> AbstractAsyncContextManager[AsyncConnection]:
        """The caller's transaction when given (to commit with what it enqueues), else one."""
        return _borrowed(tx.connection) if tx is not None else self.db.write()

    # ---- users -------------------------------------------------------------------------------
    async def create_user(
        self,
        *,
        email: str,
        password_hash: str,
        role: Role = "user",
        verified: bool = False,
        username: str | None = None,
        only_if_no_admin: bool = False,
        tx: Transaction | None = None,
    ) -> UserRecord | None:
        """Insert a user; None when the e-mail or username is taken (nothing is changed).

        ``only_if_no_admin`` makes the insert conditional on no admin existing, checked in
        the same transaction, for the first-start admin that several processes may try to
        create at once. SQLite serialises writers anyway; on PostgreSQL an advisory lock
        does, so even processes given different admin e-mails create one admin. With
        ``tx`` the insert joins that transaction.
        """
        now = utcnow()
        values = {
            "id": uuid7(),
            "email": email.lower(),
            "username": _lower(username),
            "password_hash": password_hash,
            "role": role,
            "verified": verified,
            "disabled": False,
            "created_at": now,
            "updated_at": now,
        }
        async with self._write(tx) as c:
            if only_if_no_admin and await self._admin_exists_locked(c):
                return None
            stmt = self.db.insert(users).values(**values).on_conflict_do_nothing()
            row = (await c.execute(stmt.returning(*users.c))).one_or_none()
        return None if row is None else _user(row)

    async def get_user(self, user_id: str) -> UserRecord | None:
        return await self._one_user(users.c.id == user_id)

    async def find_by_email(self, email: str) -> UserRecord | None:
        return await self._one_user(users.c.email == email.lower())

    async def find_by_login(self, login: str) -> UserRecord | None:
        """The user whose e-mail (any case) or username is ``login``.

        E-mails always contain ``@`` and usernames never do, so one lookup decides. Both are
        stored lower-cased, so neither can be registered twice in different cases.
        """
        if "@" in login:
            return await self.find_by_email(login)
        return await self._one_user(users.c.username == login.lower())

    async def list_users(self, *, after_id: str | None = None, limit: int = 50) -> list[UserRecord]:
        """Oldest first, paginated by id (ids are time-ordered)."""
        query = select(users).order_by(users.c.id).limit(limit)
        if after_id is not None:
            query = query.where(users.c.id > after_id)
        async with self.db.read() as conn:
            return [_user(row) for row in await conn.execute(query)]

    async def update_user(self, user_id: str, **changes: Unpack[UserChanges]) -> UserRecord | None:
        """Change some columns; None for an unknown user, Conflict for a taken e-mail/username."""
        values: dict[str, Any] = {**changes, "updated_at": utcnow()}
        for name in ("email", "username"):
            if name in values:
                values[name] = _lower(values[name])
        try:
            async with self.db.write() as conn:
                row = (
                    await conn.execute(
                        update(users)
                        .where(users.c.id == user_id)
                        .values(**values)
                        .returning(*users.c)
                    )
                ).one_or_none()
        except IntegrityError as exc:
            raise Conflict("the e-mail or username is taken") from exc
        return None if row is None else _user(row)

    async def has_admin(self) -> bool:
        async with self.db.read() as conn:
            return await _admin_exists(conn)

    async def count_active_admins(self) -> int:
        """Admins who can still sign in: the last one must not be demoted or disabled."""
        query = select(func.count()).where(users.c.role == "admin", users.c.disabled.is_(False))
        async with self.db.read() as conn:
            return int(await conn.scalar(query) or 0)

    async def _admin_exists_locked(self, conn: AsyncConnection) -> bool:
        if self.db.dialect == "postgresql":
            await conn.execute(select(func.pg_advisory_xact_lock(_FIRST_ADMIN_LOCK)))
        return await _admin_exists(conn)

    async def _one_user(self, condition: Any) -> UserRecord | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(users).where(condition))).one_or_none()
        return None if row is None else _user(row)

    # ---- one-time codes ----------------------------------------------------------------------
    async def save_otp(
        self, user_id: str, record: OtpRecord, tx: Transaction | None = None
    ) -> None:
        """Store a newly issued code, replacing the previous one (only the newest is valid);
        in ``tx``'s transaction when given, with the mail that carries the code."""
        _check_subject(user_id, record)
        values = _otp_values(record)
        stmt = (
            self.db.insert(otp_codes)
            .values(user_id=user_id, **values)
            .on_conflict_do_update(index_elements=[otp_codes.c.user_id], set_=values)
        )
        async with self._write(tx) as c:
            await c.execute(stmt)

    async def load_otp(self, user_id: str) -> OtpRecord | None:
        query = select(otp_codes).where(otp_codes.c.user_id == user_id)
        async with self.db.read() as conn:
            row = (await conn.execute(query)).one_or_none()
        if row is None:
            return None
        return OtpRecord(
            subject=otp_subject(user_id),
            code_hash=row.code_hash,
            created_at=row.created_at,
            expires_at=row.expires_at,
            attempts=row.attempts,
            used_at=row.used_at,
        )

    async def apply_otp_check(self, user_id: str, before: OtpRecord, check: OtpCheck) -> bool:
        """Persist a checked attempt if the code is still as it was read; False otherwise.

        A compare-and-set on the attempt counter: of concurrent guesses at one code each
        counts exactly once, so parallel requests cannot get past the attempt limit, and a
        right code is consumed once. A successful check also marks the user verified in the
        same transaction, so a used code always means a verified e-mail.
        """
        _check_subject(user_id, before)
        after = check.record
        guard = (
            otp_codes.c.user_id == user_id,
            otp_codes.c.code_hash == before.code_hash,
            otp_codes.c.attempts == before.attempts,
            otp_codes.c.used_at.is_(None),
        )
        async with self.db.write() as conn:
            result = await conn.execute(
                update(otp_codes)
                .where(*guard)
                .values(attempts=after.attempts, used_at=after.used_at)
            )
            if result.rowcount != 1:
                return False
            if check.ok:
                await conn.execute(
                    update(users)
                    .where(users.c.id == user_id)
                    .values(verified=True, updated_at=utcnow())
                )
        return True

    # ---- refresh tokens (the RefreshStore of auth/refresh.py) --------------------------------
    async def record(self, *, jti: str, family_id: str, subject: str, expires_at: datetime) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                refresh_tokens.insert().values(
                    jti=jti,
                    family_id=family_id,
                    user_id=subject,
                    expires_at=expires_at,
                    used_at=None,
                    revoked_at=None,
                    created_at=utcnow(),
                )
            )

    async def mark_used(self, jti: str) -> bool:
        """Compare-and-set: True for exactly one of any number of concurrent exchanges."""
        async with self.db.write() as conn:
            result = await conn.execute(
                update(refresh_tokens)
                .where(
                    refresh_tokens.c.jti == jti,
                    refresh_tokens.c.used_at.is_(None),
                    refresh_tokens.c.revoked_at.is_(None),
                )
                .values(used_at=utcnow())
            )
        return result.rowcount == 1

    async def revoke_family(self, family_id: str) -> None:
        await self._revoke(refresh_tokens.c.family_id == family_id)

    async def is_revoked(self, family_id: str) -> bool:
        """True when any token of the family was revoked.

        Asked of the family rather than one token, so a token recorded by a rotation that
        raced with the revocation is refused too.
        """
        revoked = exists().where(
            refresh_tokens.c.family_id == family_id, refresh_tokens.c.revoked_at.is_not(None)
        )
        async with self.db.read() as conn:
            return bool(await conn.scalar(select(revoked)))

    async def get_user_in_session(
        self,
        user_id: str,
        family_id: str | None,
        issued_at: datetime,
        tx: Transaction | None = None,
    ) -> tuple[UserRecord | None, bool]:
        """The user an access token names, and whether the token's session has ended.

        One indexed round trip, the same as `get_user`, so checking the session costs an
        access token's request next to nothing. A token with a family has ended when its
        family was revoked (sign-out, password change, reuse, disabled account). A token
        without one (a registration token, or one issued before tokens named their family)
        has ended when any of the user's sessions was revoked at or after it was issued.
        In ``tx`` when given: a submission checks its caller in its own transaction.
        """
        if family_id is not None:
            ended = exists().where(
                refresh_tokens.c.family_id == family_id, refresh_tokens.c.revoked_at.is_not(None)
            )
        else:
            ended = exists().where(
                refresh_tokens.c.user_id == user_id, refresh_tokens.c.revoked_at >= issued_at
            )
        query = select(users, ended.label("session_ended")).where(users.c.id == user_id)
        async with self._read(tx) as conn:
            row = (await conn.execute(query)).one_or_none()
        if row is None:
            return None, False
        return _user(row), bool(row.session_ended)

    async def revoke_all_for_user(self, user_id: str) -> None:
        """Sign the user out everywhere (password change, disabled account)."""
        await self._revoke(refresh_tokens.c.user_id == user_id)

    async def prune_refresh_tokens(self, now: datetime) -> int:
        """Delete families whose every token has expired; their rows can refuse nothing more.

        Whole families only: a live token must keep its revoked siblings to stay refused.
        """
        dead = (
            select(refresh_tokens.c.family_id)
            .group_by(refresh_tokens.c.family_id)
            .having(func.max(refresh_tokens.c.expires_at) < now)
        )
        async with self.db.write() as conn:
            result = await conn.execute(
                delete(refresh_tokens).where(refresh_tokens.c.family_id.in_(dead.scalar_subquery()))
            )
        return result.rowcount

    async def _revoke(self, condition: Any) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                update(refresh_tokens)
                .where(condition, refresh_tokens.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )

    # ---- API keys ----------------------------------------------------------------------------
    async def create_api_key(
        self, *, user_id: str, name: str, prefix: str, key_hash: str
    ) -> ApiKeyRecord:
        values = {
            "id": uuid7(),
            "user_id": user_id,
            "name": name,
            "prefix": prefix,
            "key_hash": key_hash,
            "created_at": utcnow(),
            "last_used_at": None,
            "revoked_at": None,
        }
        async with self.db.write() as conn:
            row = (await conn.execute(api_keys.insert().values(**values).returning(*_KEY))).one()
        return _api_key(row)

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        """The live (not revoked) key with this hash."""
        query = select(*_KEY).where(
            api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None)
        )
        async with self.db.read() as conn:
            row = (await conn.execute(query)).one_or_none()
        return None if row is None else _api_key(row)

    async def api_key_owner(
        self, key_id: str, tx: Transaction | None = None
    ) -> tuple[UserRecord | None, ApiKeyRecord | None]:
        """The key (revoked or not) and its owner, in one indexed query (``tx``'s, if given):
        an API key's request checks its key and its account in one round trip."""
        query = (
            select(users, *(c.label(f"key_{c.name}") for c in _KEY))
            .select_from(api_keys.join(users, users.c.id == api_keys.c.user_id))
            .where(api_keys.c.id == key_id)
        )
        async with self._read(tx) as conn:
            row = (await conn.execute(query)).one_or_none()
        if row is None:
            return None, None
        key = ApiKeyRecord(**{c.name: getattr(row, f"key_{c.name}") for c in _KEY})
        return _user(row), key

    async def touch_api_key(
        self,
        key_id: str,
        now: datetime,
        *,
        unless_since: datetime,
        tx: Transaction | None = None,
    ) -> None:
        """Set ``last_used_at``, unless it is already at or after ``unless_since``.

        Callers skip the call when the key they read was used recently, so a busy key costs
        one write per interval rather than one per request; the guard keeps racing callers
        from moving the time backwards.
        """
        async with self._write(tx) as conn:
            await conn.execute(
                update(api_keys)
                .where(
                    api_keys.c.id == key_id,
                    (api_keys.c.last_used_at.is_(None)) | (api_keys.c.last_used_at < unless_since),
                )
                .values(last_used_at=now)
            )

    async def revoke_all_api_keys(self, user_id: str) -> None:
        """Revoke every live key of the user (a password change, when so configured)."""
        async with self.db.write() as conn:
            await conn.execute(
                update(api_keys)
                .where(api_keys.c.user_id == user_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )

    async def list_api_keys(
        self, user_id: str, *, include_revoked: bool = False
    ) -> list[ApiKeyRecord]:
        query = select(*_KEY).where(api_keys.c.user_id == user_id).order_by(api_keys.c.id)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        async with self.db.read() as conn:
            return [_api_key(row) for row in await conn.execute(query)]

    async def revoke_api_key(self, user_id: str, key_id: str) -> ApiKeyRecord | None:
        """Revoke the user's key (again is a no-op); None when the user has no such key."""
        revoked_at = func.coalesce(api_keys.c.revoked_at, literal(utcnow(), UTCDateTime()))
        async with self.db.write() as conn:
            row = (
                await conn.execute(
                    update(api_keys)
                    .where(api_keys.c.id == key_id, api_keys.c.user_id == user_id)
                    .values(revoked_at=revoked_at)
                    .returning(*_KEY)
                )
            ).one_or_none()
        return None if row is None else _api_key(row)


_KEY: Sequence[Any] = tuple(column for column in api_keys.c if column.name != "key_hash")


@asynccontextmanager
async def _borrowed(conn: AsyncConnection) -> AsyncIterator[AsyncConnection]:
    yield conn


async def _admin_exists(conn: AsyncConnection) -> bool:
    return bool(await conn.scalar(select(exists().where(users.c.role == "admin"))))


def _lower(value: str | None) -> str | None:
    return None if value is None else value.lower()


def _check_subject(user_id: str, record: OtpRecord) -> None:
    if record.subject != otp_subject(user_id):
        raise ValueError(f"an OTP record for {record.subject!r} is not user {user_id}'s")


def _otp_values(record: OtpRecord) -> dict[str, Any]:
    return {
        "code_hash": record.code_hash,
        "created_at": record.created_at,
        "expires_at": record.expires_at,
        "attempts": record.attempts,
        "used_at": record.used_at,
    }


def _user(row: Row[Any]) -> UserRecord:
    return UserRecord(
        id=row.id,
        email=row.email,
        username=row.username,
        role=row.role,
        verified=bool(row.verified),
        disabled=bool(row.disabled),
        created_at=row.created_at,
        updated_at=row.updated_at,
        password_hash=row.password_hash,
        fair_weight=float(row.fair_weight),
        max_queued=row.max_queued,
        max_running=row.max_running,
    )


def _api_key(row: Row[Any]) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row.id,
        user_id=row.user_id,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )
