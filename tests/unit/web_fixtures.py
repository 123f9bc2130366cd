"""The web tests' fixtures, for ``from tests.unit.web_fixtures import *`` in other test modules
(a star import, so that test parameters named like the fixtures do not shadow an import)."""

from tests.unit.test_web import app, client, password_hash, seeded, web_platform

__all__ = ["app", "client", "password_hash", "seeded", "web_platform"]
