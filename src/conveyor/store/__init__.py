"""Persistence: tables, migrations and one queue backend per database. The only place SQL lives."""
