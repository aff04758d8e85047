"""ASGI middleware, one module per concern: `request_log` (request ids, one log line per
request), `http_metrics` (counts and times by route template), `db_deadline` (the request's
database deadline), `security_headers` (nosniff), all applied in one layer by `edge`; and
`body_limits` (body size, JSON depth, NaN and NUL refused). Import each from its module."""
