"""Credentials without storage: password hashes, JWTs, one-time codes and API keys.

Everything here is pure or CPU-bound; the user store and the HTTP doors build on it.
"""
