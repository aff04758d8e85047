"""Service tests hash many passwords; the root conftest makes argon2 cheap for them."""
