"""What Odoo's test transaction cannot show: rows written by a cursor of their own, several worker processes.

Run by the Odoo tier (tools/odoo_tier.py) once per series, in a fresh database, against the fake Microsoft in
this process: ``MAIL_GRAPH_TEST_SERIES=18.0 python -m pytest tests_odoo``.
"""

from __future__ import annotations

import os
import time
import uuid

import pytest

from fake_microsoft import FakeMicrosoft
from tests_odoo.jobs import BASE_URL
from tools.odoo_harness import OdooInstance, result_of

SERIES = os.environ.get("MAIL_GRAPH_TEST_SERIES", "18.0")
CALLBACK = BASE_URL + "/mail_graph_api/auth/callback"


@pytest.fixture(scope="module")
def fake():
    fake = FakeMicrosoft(port=0)
    fake.start()
    fake.configure(redirect_uris=[CALLBACK])
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def odoo():
    instance = OdooInstance(SERIES, db=f"mga_proc_{SERIES.replace('.', '_')}_{os.getpid()}")
    instance.create_database()
    yield instance
    instance.drop_database()


@pytest.fixture(scope="module")
def server_id(odoo, fake):
    return odoo.call("tests_odoo.jobs:configure_server", authority_url=fake.url, graph_url=fake.graph_url)["server_id"]


def test_log_rows_survive_a_rollback_of_the_sending_transaction(odoo, fake, server_id):
    subject = f"rollback {uuid.uuid4()}"
    result = odoo.call("tests_odoo.jobs:send_then_roll_back", server_id=server_id, subject=subject)

    assert result["state_before_rollback"] == "sent"
    assert result["state_after_rollback"] == "outgoing", "the rollback undid Odoo's record of the send"
    received = [m for m in fake.messages() if m["internet_message_id"] == result["message_id"]]
    assert len(received) == 1, "Microsoft accepted the mail once"
    assert {"operation": "sendMail", "outcome": "ok"} in result["logs"], "the log row outlived the rollback"

    # The next queue run finds the mail still outgoing: the duplicate guard reads the surviving row.
    assert odoo.call("tests_odoo.jobs:send_at", mail_ids=[result["mail_id"]], start_at=0)["states"] == ["sent"]
    received = [m for m in fake.messages() if m["internet_message_id"] == result["message_id"]]
    assert len(received) == 1, "not sent a second time"


def _refresh_grants(fake) -> list:
    return [call for call in fake.calls("token") if call.get("grant_type") == "refresh_token"]


def test_two_workers_renewing_at_once_keep_the_newest_refresh_token(odoo, fake, server_id):
    ids_a = odoo.call("tests_odoo.jobs:queue_mails", server_id=server_id, subjects=[f"worker A {i}" for i in range(3)])
    ids_b = odoo.call("tests_odoo.jobs:queue_mails", server_id=server_id, subjects=[f"worker B {i}" for i in range(3)])
    odoo.call("tests_odoo.jobs:expire_stored_token", server_id=server_id)
    fake.expire_tokens()
    refreshes_before = len(_refresh_grants(fake))
    sent_before = len(fake.messages())

    start_at = time.time() + 6  # both processes have imported Odoo by then
    workers = [
        odoo.spawn("tests_odoo.jobs:send_at", log_name=f"worker-{name}", mail_ids=ids, start_at=start_at)
        for name, ids in (("a", ids_a), ("b", ids_b))
    ]
    results = [result_of(worker, "worker", timeout=120) for worker in workers]

    assert [set(r["states"]) for r in results] == [{"sent"}, {"sent"}]
    assert len(fake.messages()) - sent_before == 6
    assert len(_refresh_grants(fake)) - refreshes_before == 1, "one renewal, shared through the locked row"
    stored = odoo.call("tests_odoo.jobs:stored_tokens", server_id=server_id)
    newest = max(fake.state.refresh_tokens.values(), key=lambda grant: grant.issued_at)
    assert stored["refresh_token"] == newest.token, "the rotated refresh token was stored"
    assert stored["state"] == "connected"

    # And it works: the next renewal redeems the stored refresh token.
    odoo.call("tests_odoo.jobs:expire_stored_token", server_id=server_id)
    fake.expire_tokens()
    (mail_id,) = odoo.call("tests_odoo.jobs:queue_mails", server_id=server_id, subjects=["after rotation"])
    assert odoo.call("tests_odoo.jobs:send_at", mail_ids=[mail_id], start_at=0)["states"] == ["sent"]


def test_uninstall_leaves_no_broken_view(odoo, fake, server_id):
    """Runs last: the database has the addon configured and used, as a real one would."""
    result = odoo.call("tests_odoo.jobs:uninstall_addon", timeout=300)

    assert result["state"] == "uninstalled"
    assert result["form_renders"] and result["list_renders"], result
    assert not result["log_model_left"]
    assert result["leftover_views"] == 0
    assert result["leftover_columns"] == []
