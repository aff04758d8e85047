"""ASGI middleware, one module per concern: `request_log` (request ids, one log line per
request), `http_metrics` (counts and times by route template), `body_limits` (body size,
JSON depth, NaN and NUL refused), `security_headers` (nosniff). Import each from its module."""
