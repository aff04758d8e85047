"""The policy's safe defaults and its one link to the settings."""

from __future__ import annotations

from conveyor.net import FetchPolicy
from conveyor.settings import Settings


def test_the_defaults_are_the_strict_ones() -> None:
    policy = FetchPolicy()
    assert not policy.allow_private
    assert not policy.allow_userinfo
    assert policy.ports == frozenset({80, 443})
    assert policy.max_bytes == 10 * 1024 * 1024
    assert policy.max_redirects == 3


def test_from_settings_follows_allow_private_urls() -> None:
    strict = FetchPolicy.from_settings(Settings(_env_file=None))
    assert strict == FetchPolicy()
    private = FetchPolicy.from_settings(Settings(_env_file=None, allow_private_urls=True))
    assert private.allow_private
    assert private.ports is None
