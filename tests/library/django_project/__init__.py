"""A Django project (tests only): a shop whose order and its job commit together."""
