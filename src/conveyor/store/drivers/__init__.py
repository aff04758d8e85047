"""One statements-only driver per database (store/driver.py says what each implements)."""
