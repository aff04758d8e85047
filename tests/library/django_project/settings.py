"""The project's settings; the test points DATABASES at its own database (`configure`)."""

from __future__ import annotations

from typing import Any

INSTALLED_APPS = ["tests.library.django_project.shop"]
USE_TZ = True
SECRET_KEY = "tests-only"  # a test project's, never a deployment's


def database(url_name: str) -> dict[str, Any]:
    """The `default` database entry for a PostgreSQL database on the test server."""
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": url_name,
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": "5432",
    }
