"""Sending limits (issue #16): N recipient copies through one mailbox, then through a pool of 4, against the
fake Microsoft enforcing Exchange's limits (``./dev bench --only quota``; ``--quota N`` adds it to a full run).

Exchange's 30 messages a minute would make 2,000 copies take over an hour through one mailbox: the rate is
scaled up on both sides alike (``--quota-rate``, default 120 a minute: Exchange's limit on a clock running 4
times faster), so the run takes minutes. The fake delays whatever leaves a mailbox over the rate and bounces
(5.1.90) whatever exceeds the daily recipients; Odoo must hold mail back instead, so that nothing is delayed,
bounced, failed or sent twice, and drain the queue close to the ideal time, copies / (mailboxes x rate).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Dict, List, Optional

from benchmarks.incoming import columns
from fake_microsoft import FakeMicrosoft
from tools.odoo_harness import OdooInstance

JOBS = "benchmarks.quota_jobs"
RATIO_TARGET = 1.1
EXTRA_MAILBOX = "support@contoso.onmicrosoft.com"


def measure_quota(
    copies: int,
    rate: int,
    series: str,
    fake: FakeMicrosoft,
    out: Path,
    keep: bool = False,
    say: Callable[[str], None] = print,
) -> Dict:
    instance = OdooInstance(series, db=f"mga_bench_quota_{os.getpid()}", logdir=out / "logs")
    daily = 10_000
    results: Dict = {"copies": copies, "rate": rate, "daily": daily, "legs": {}}
    previous = fake.config()
    try:
        say(f"[quota] creating {instance.db}")
        instance.create_database()
        users = previous["users"]
        if not any(user["userPrincipalName"] == EXTRA_MAILBOX for user in users):
            users = [*users, _user(EXTRA_MAILBOX, "Contoso Support", "0004")]
        fake.configure(users=users, message_rate_limit=rate, daily_recipient_limit=daily, mailbox_concurrency=4)
        for label, mailboxes in (("one mailbox", 1), ("pool of 4", 4)):
            ideal = copies / (mailboxes * rate) * 60
            say(f"[quota] {label}: {copies} copies, {rate} a minute per mailbox (ideal {ideal:.0f} s)")
            servers = instance.call(
                f"{JOBS}:create_servers",
                authority_url=fake.url,
                graph_url=fake.graph_url,
                mailboxes=mailboxes,
                rate=rate,
                daily=daily,
            )
            queued = instance.call(f"{JOBS}:queue", count=copies, server_id=servers[0], label=label)
            mark = len(fake.messages())
            drained = instance.call(f"{JOBS}:drain", ids=queued["ids"], timeout=max(600.0, ideal * 3))
            ours = set(instance.call(f"{JOBS}:message_ids", label=label))
            received = [m for m in fake.messages()[mark:] if m["internet_message_id"] in ours]
            counts = Counter(m["internet_message_id"] for m in received)
            leg = dict(
                drained,
                mailboxes=mailboxes,
                ideal=ideal,
                ratio=drained["wall"] / ideal,
                received=len(counts),
                duplicates=sum(n - 1 for n in counts.values()),
                delayed=sum(1 for m in received if m.get("delayed")),
                ndr=sum(1 for m in received if m.get("ndr")),
                sent_by_fake=dict(Counter(m["mailbox"] for m in received)),
                **instance.call(f"{JOBS}:pool_rows", label=label),
            )
            results["legs"][label] = leg
            say(
                f"    {leg['states']} in {leg['wall']:.0f} s (ideal {ideal:.0f} s, ratio {leg['ratio']:.2f}); "
                f"{leg['runs']} queue runs; delayed {leg['delayed']}, NDR {leg['ndr']}, twice {leg['duplicates']}; "
                f"{leg['cpu']:.1f} s Odoo CPU"
            )
            time.sleep(61)  # the next leg starts with every mailbox's minute empty, at Odoo and at the fake
    finally:
        fake.configure(**{key: previous[key] for key in ("users", "message_rate_limit", "daily_recipient_limit")})
        if not keep:
            instance.drop_database()
    return results


def _user(upn: str, name: str, suffix: str) -> Dict:
    return {
        "id": f"a1b2c3d4-{suffix}-4a5b-8c9d-0e1f2a3b4c5d",
        "userPrincipalName": upn,
        "mail": upn,
        "displayName": name,
        "mailbox_enabled": True,
    }


def render_rows(results: Optional[Dict]) -> List[tuple]:
    if not results:
        return []
    if "error" in results:
        return [("quota: sending limits", f"not measured: {results['error']}", "", "")]
    rows = [
        (
            f"quota: N={results['copies']} recipient copies",
            f"{results['rate']} mails a minute per mailbox at Odoo and at the fake (Exchange's 30 with time "
            f"running {results['rate'] / 30:g}x faster), {results['daily']:,} recipients a day",
            "",
            "",
        )
    ]
    for label, leg in results["legs"].items():
        failed = sum(n for state, n in leg["states"].items() if state not in ("sent",))
        ok_counts = leg["ndr"] == 0 and failed == 0 and leg["duplicates"] == 0 and leg["delayed"] == 0
        rows.append(
            (
                f"quota: {label}: NDRs from limits / delayed by Exchange / failed / twice",
                f"{leg['ndr']} / {leg['delayed']} / {failed} / {leg['duplicates']} {'ok' if ok_counts else 'NOT ok'}",
                f"received {leg['received']} of {results['copies']}; sent by {leg['sent_by_fake']}; "
                f"{leg['failovers']} pool failovers logged",
                "0 / 0 / 0 / 0",
            )
        )
        rows.append(
            (
                f"quota: {label}: drain time / ideal",
                f"{leg['ratio']:.2f} {'ok' if leg['ratio'] <= RATIO_TARGET else 'NOT ok'} "
                f"({leg['wall']:.0f} s / {leg['ideal']:.0f} s)",
                f"{leg['runs']} queue runs ({leg['idle_runs']} found nothing to send); {leg['cpu']:.1f} s Odoo CPU",
                f"<= {RATIO_TARGET}",
            )
        )
    return rows


def render_table(results: Optional[Dict]) -> List[str]:
    rows = render_rows(results)
    if not rows:
        return []
    return columns(("quota benchmark", "mail_graph_api against the fake's enforced limits", "details", "target"), rows)
