"""Typed failures of the outbound fetcher; none of their messages carries credentials.

The bases say what a caller can do: a ``BlockedUrl`` is bad input that no retry can fix (422 at
the API, non-retryable in a job), a ``FetchFailed`` is the network or the remote end and may
pass on a retry (503), and ``TooLarge`` will not shrink by asking again.
"""

from __future__ import annotations

from conveyor.errors import ConveyorError, InvalidInput, NonRetryableError, Unavailable


class FetchError(ConveyorError):
    """The URL could not be fetched."""

    code = "fetch_error"


class BlockedUrl(FetchError, InvalidInput, NonRetryableError):
    """The URL is not allowed: only public http(s) addresses on the allowed ports."""

    code = "blocked_url"


class FetchFailed(FetchError, Unavailable):
    """The URL could not be fetched: a network error, a timeout or too many redirects."""

    code = "fetch_failed"


class TooLarge(FetchError, NonRetryableError):
    """The response body is larger than the fetcher accepts."""

    code = "fetch_too_large"
