# The console's named people in two tenants (see tests/console/conftest.py), for the billing pages.
from tests.console.conftest import api_as, client_as, world  # noqa: F401
