from __future__ import annotations

from typing import Iterator

import pytest

from fake_microsoft import FakeMicrosoft


@pytest.fixture
def fake() -> Iterator[FakeMicrosoft]:
    """A fresh fake Microsoft on a free loopback port, stopped after the test."""
    with FakeMicrosoft() as server:
        yield server


# -- core library (graph_mail) fixtures ---------------------------------------------------------------


@pytest.fixture
def graph_mail_reset() -> Iterator[None]:
    """Forget graph_mail's process-wide tokens and msal apps so each test starts cold."""
    from graph_mail.auth import clear_caches

    clear_caches()
    yield
    clear_caches()
