"""The one account service the doors call, assembled from its parts."""

from __future__ import annotations

from conveyor.services.accounts.admin import Administration
from conveyor.services.accounts.api_keys import ApiKeys
from conveyor.services.accounts.credentials import Credentials
from conveyor.services.accounts.registration import Registration
from conveyor.services.accounts.signin import SignIn


class AccountService(Registration, SignIn, Credentials, ApiKeys, Administration):
    """Every account use case; the API, the dashboard, the CLI and the adapters call these.

    Each part is a module of `conveyor.services.accounts`; they share `AccountCore`'s state.
    Mail is not sent from here: it is queued as durable `account_mail` jobs that a worker
    taking the ``mail`` queue sends.
    """
