"""Which tests leave this process, so that ``pytest -m "not e2e"`` is the fast subset a
developer runs all the time: tests that start no process and no server.

A fixture that starts something says what with one of the decorators below (written under its
``@pytest.fixture``); ``mark_process_tests`` (called from tests/conftest.py) marks every test
that uses such a fixture, directly or through other fixtures. A test that starts something in
its own body carries the mark itself.

- ``e2e``: the test starts processes or servers — the services, the NATS, PostgreSQL and S3
  servers behind them, stand-ins (fake providers, a hanging TCP server, an OTLP receiver) or
  other programs (promtool, kubectl, a fresh interpreter).
- ``infra``: an ``e2e`` test that starts infrastructure and no service: ``-m infra`` runs that
  tier, ``-m "e2e and not infra"`` the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

import pytest

F = TypeVar("F", bound=Callable[..., object])

_STARTS = "_genimage_starts"
SERVICES, INFRA, OTHER = "services", "infra", "other"


def _starts(kind: str) -> Callable[[F], F]:
    def mark(fixture: F) -> F:
        setattr(fixture, _STARTS, kind)
        return fixture

    return mark


starts_services = _starts(SERVICES)
"""The fixture starts one or more of the services as processes."""

starts_infra = _starts(INFRA)
"""The fixture starts NATS, PostgreSQL or an S3 store as processes, and no service."""

out_of_process = _starts(OTHER)
"""The fixture starts a stand-in server (in a thread or a process) or hands out a program to run."""


def _started_by_fixtures(item: pytest.Item) -> set[str]:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:  # not a test function (a doctest, say): it uses no fixture
        return set()
    # The closure: fixtures used through other fixtures are listed too; the last definition of
    # a name is the one in effect for this test (conftest overrides).
    return {getattr(defs[-1].func, _STARTS, "") for defs in info.name2fixturedefs.values() if defs} - {""}


def mark_process_tests(items: Iterable[pytest.Item]) -> None:
    for item in items:
        started = _started_by_fixtures(item)
        # A test marked e2e by hand starts a service or another program in its own body.
        by_hand = item.get_closest_marker("e2e") is not None
        infra_only = INFRA in started and SERVICES not in started and not by_hand
        if infra_only or item.get_closest_marker("infra"):
            item.add_marker(pytest.mark.infra)
        if started or item.get_closest_marker("infra"):
            item.add_marker(pytest.mark.e2e)
