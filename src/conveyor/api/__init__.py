"""The HTTP door: FastAPI routers onto the services. No SQL here; no business rules either."""
