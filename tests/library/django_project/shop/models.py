"""The shop's one model: an order (the table the test fixture made)."""

from __future__ import annotations

from django.db import models


class Order(models.Model):
    id = models.IntegerField(primary_key=True)
    note = models.TextField(null=True)

    class Meta:
        app_label = "shop"
        db_table = "orders"
        managed = False
