"""Thin adapters that keep the five reference systems' documented calls working.

Each module only translates shapes onto the primary services (CONTRACTS.md); no behaviour
lives here.
"""
