"""The shop app."""

from __future__ import annotations

from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "tests.library.django_project.shop"
    label = "shop"
