"""What the benchmarks run inside Odoo, through tools/odoo_exec.py (Odoo's own Python, superuser ``env``).

Each function returns JSON-able data; odoo_exec commits when it returns. Nothing here is imported by the
addon. Mail is really sent: odoo_exec does not run in Odoo's test mode (``modules.module.current_test`` is
None), which is what mail_graph_api/compat.py and Odoo's own ir.mail_server look at.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
import urllib.request
from typing import Dict, List, Optional

MB = 1024 * 1024
SENDER = "admin@contoso.onmicrosoft.com"  # the fake's default signed-in mailbox (fake_microsoft.DEFAULTS)
QUEUE_BATCH = 1000  # what Odoo's cron takes per run (mail.mail.queue.batch.size)


def mixed_size(index: int) -> int:
    """Attachment bytes of queued mail ``index``: 1 in 10 carries 1 MiB, 2 in 10 100 KiB, 1 in 10 20 KiB."""
    slot = index % 10
    if slot == 0:
        return MB
    if slot in (1, 2):
        return 100 * 1024
    if slot == 3:
        return 20 * 1024
    return 0


# --------------------------------------------------------------------------------------------------------
# Set-up
# --------------------------------------------------------------------------------------------------------


def create_smtp_server(env, port: int, sequence: int = 5) -> int:
    """A plain SMTP ir.mail_server on the local sink: no TLS, no login."""
    return (
        env["ir.mail_server"]
        .create(
            {
                "name": "Local SMTP sink",
                "smtp_host": "127.0.0.1",
                "smtp_port": port,
                "smtp_encryption": "none",
                "smtp_authentication": "login",
                "max_email_size": 150,
                "sequence": sequence,
            }
        )
        .id
    )


def create_peer_server(env, client_id: str, client_secret: str, tenant_id: str, refresh_token: str = "") -> int:
    """The peer addon's Graph server (its fields are named ms_*)."""
    return (
        env["ir.mail_server"]
        .create(
            {
                "name": "Microsoft 365 (peer Graph addon)",
                "use_graph_api": True,
                "ms_client_id": client_id,
                "ms_client_secret": client_secret,
                "ms_tenant_id": tenant_id,
                "ms_sender_email": SENDER,
                "ms_refresh_token": refresh_token or False,
                "sequence": 10,
                "fallback_to_smtp": False,
            }
        )
        .id
    )


def clear_access_token(env, server_id: int, peer: bool = False) -> None:
    """Forget the stored access token: the next send must ask the token endpoint (a cold start)."""
    columns = ("ms_access_token", "ms_token_expiry") if peer else ("graph_access_token", "graph_access_token_expiry")
    env.cr.execute(f"UPDATE ir_mail_server SET {columns[0]} = NULL, {columns[1]} = NULL WHERE id = %s", [server_id])
    _compat().invalidate_all(env)


def queue_mails(env, count: int, server_id: Optional[int] = None, sizes: str = "mixed", start: int = 0) -> Dict:
    """``count`` outgoing mail.mail, each with its own attachment (sizes: ``mixed`` up to 1 MiB, ``none``)."""
    ids: List[int] = []
    total = 0
    paragraph = "<p>Dear customer, your order {i} has shipped. Tracking and invoice details follow.</p>"
    for first in range(start, start + count, 100):
        chunk = range(first, min(first + 100, start + count))
        sizes_of = {i: (mixed_size(i) if sizes == "mixed" else 0) for i in chunk}
        attachments = env["ir.attachment"].create(
            [
                {"name": f"order-{i}.bin", "raw": os.urandom(sizes_of[i]), "mimetype": "application/octet-stream"}
                for i in chunk
                if sizes_of[i]
            ]
        )
        by_index = dict(zip([i for i in chunk if sizes_of[i]], attachments.ids))
        values = []
        for i in chunk:
            total += sizes_of[i]
            mail = {
                "subject": f"Order {i} shipped",
                "body_html": "".join(paragraph.format(i=i) for _ in range(30)),
                "email_from": f"Contoso Sales <{SENDER}>",
                "email_to": f"customer{i}@fabrikam.example",
                "auto_delete": False,
            }
            if server_id:
                mail["mail_server_id"] = server_id
            if i in by_index:
                mail["attachment_ids"] = [(6, 0, [by_index[i]])]
            values.append(mail)
        ids.extend(env["mail.mail"].create(values).ids)
    return {"ids": ids, "attachment_bytes": total}


def forget_mails(env, ids: List[int]) -> None:
    """Remove a finished run's mails and attachments, so the next run starts from the same table sizes."""
    mails = env["mail.mail"].browse(ids).exists()
    attachments = mails.mapped("attachment_ids")
    mails.unlink()
    attachments.unlink()


# --------------------------------------------------------------------------------------------------------
# Sending
# --------------------------------------------------------------------------------------------------------


def _states(env, ids: List[int]) -> Dict:
    mails = env["mail.mail"].browse(ids).exists()
    counts: Dict[str, int] = {}
    reasons: List[str] = []
    for mail in mails:
        counts[mail.state] = counts.get(mail.state, 0) + 1
        if mail.state == "exception" and mail.failure_reason and len(reasons) < 3:
            reasons.append(mail.failure_reason[:300])
    return {"states": counts, "failures": reasons}


def drain(
    env,
    ids: List[int],
    peer: bool = False,
    profile: str = "",
    profile_site: str = "",
    start_at: float = 0.0,
) -> Dict:
    """Odoo's queue processing over ``ids``, as the cron does it (batches of 1,000, committed per mail).

    Returns the wall and CPU seconds of this process for the whole drain, and the mails' final states."""
    mail_model = env["mail.mail"]
    env.cr.commit()
    if start_at:  # two workers: start draining together
        time.sleep(max(0.0, start_at - time.time()))
    profiler = None
    if profile:
        sys.path.insert(0, profile_site)
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.001)
        profiler.start()
    wall, cpu = time.perf_counter(), time.process_time()
    remaining = list(ids)
    rounds = 0
    errors: List[str] = []
    while remaining and rounds < len(ids) // QUEUE_BATCH + 3:
        rounds += 1
        try:
            if peer:
                mail_model.process_email_queue(remaining[:QUEUE_BATCH])  # the peer drops batch_size
            else:
                mail_model.process_email_queue(remaining[:QUEUE_BATCH], batch_size=QUEUE_BATCH)
            _compat().invalidate_all(env)
            remaining = mail_model.search([("id", "in", remaining), ("state", "=", "outgoing")]).ids
        except Exception as exc:  # what the cron would log before its next run
            env.cr.rollback()
            _compat().invalidate_all(env)
            errors.append(f"{type(exc).__name__}: {str(exc).strip()[:200]}")
            remaining = mail_model.search([("id", "in", remaining), ("state", "=", "outgoing")]).ids
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if profiler:
        profiler.stop()
        with open(profile, "w") as out:
            out.write(profiler.output_text(unicode=True, color=False))
        with open(profile.rsplit(".", 1)[0] + ".html", "w") as out:
            out.write(profiler.output_html())
    result = {"wall": wall, "cpu": cpu, "rounds": rounds, "errors": errors}
    result.update(_states(env, ids))
    return result


def _fake_calls(fake_url: str) -> List[Dict]:
    with urllib.request.urlopen(fake_url + "/_fake/calls", timeout=60) as answer:
        return json.loads(answer.read())


def send_each(env, ids: List[int], fake_url: str, peer: bool = False) -> List[Dict]:
    """Drain the queue one mail at a time and ask the fake which requests each mail cost."""
    results = []
    for mail_id in ids:
        before = len(_fake_calls(fake_url))
        if peer:
            env["mail.mail"].process_email_queue([mail_id])
        else:
            env["mail.mail"].process_email_queue([mail_id], batch_size=QUEUE_BATCH)
        _compat().invalidate_all(env)
        calls = _fake_calls(fake_url)[before:]
        mail = env["mail.mail"].browse(mail_id)
        results.append(
            {
                "id": mail_id,
                "state": mail.state,
                "message_id": mail.message_id,
                "failure": (mail.failure_reason or "")[:300],
                "calls": [{"route": c["route"], "status": c["status"], "code": c.get("code")} for c in calls],
            }
        )
    return results


def send_with_bcc(env, server_id: int) -> Dict:
    """tools/demo.py's send_with_bcc, with a failure reported in the table instead of raised (the peer)."""
    from tools.demo import send_with_bcc as demo_send_with_bcc

    try:
        return demo_send_with_bcc(env, server_id)
    except Exception as exc:
        env.cr.rollback()
        return {"message_id": "", "error": f"{type(exc).__name__}: {str(exc)[:200]}"}


# --------------------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------------------


def create_big_mail(env, size: int, server_id: int) -> Dict:
    """One small warm-up mail and one mail carrying a ``size``-byte attachment, both queued."""
    attachment = env["ir.attachment"].create(
        {"name": "big.bin", "raw": os.urandom(size), "mimetype": "application/octet-stream"}
    )
    base = {
        "email_from": f"Contoso Sales <{SENDER}>",
        "email_to": "big@fabrikam.example",
        "auto_delete": False,
        "mail_server_id": server_id,
    }
    warm = env["mail.mail"].create(dict(base, subject="warm-up", body_html="<p>warm-up</p>"))
    big = env["mail.mail"].create(
        dict(base, subject="100 MB", body_html="<p>Big.</p>", attachment_ids=[(6, 0, attachment.ids)])
    )
    return {"warm": warm.id, "big": big.id, "attachment": attachment.id}


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def memory_send(env, warm: int, big: int, build_only: bool = False) -> Dict:
    """Peak resident memory of this process above its baseline while Odoo sends mail ``big``.

    A warm-up mail first loads everything a send needs (code, token, HTTP pool); the baseline is the resident
    size after it; the peak is the kernel's high-water mark, reset just before the send (clear_refs 5), and
    a 2 ms sampler as a fallback where that reset is not allowed.

    ``build_only``: Odoo's test-mode gate is raised for the big mail, so Odoo reads the attachment and builds
    the message (and the addon prepares the envelope) but nothing is sent: Odoo's own share of the peak."""
    mail_model = env["mail.mail"]
    mail_model.process_email_queue([warm])
    _compat().invalidate_all(env)
    gc.collect()
    baseline = _status_kb("VmRSS")
    reset = True
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        reset = False
    sampled = [baseline]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            sampled[0] = max(sampled[0], _status_kb("VmRSS"))
            stop.wait(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    if build_only:
        from odoo import modules

        modules.module.current_test = True
        try:
            mail_model.process_email_queue([big])
        finally:
            modules.module.current_test = None
    else:
        mail_model.process_email_queue([big])
    seconds = time.perf_counter() - started
    stop.set()
    sampler.join()
    peak = max(sampled[0], _status_kb("VmHWM") if reset else 0)
    _compat().invalidate_all(env)
    mail = mail_model.browse(big)
    return {
        "baseline_kb": baseline,
        "peak_kb": peak,
        "hwm_reset": reset,
        "seconds": seconds,
        "state": mail.state,
        "failure": (mail.failure_reason or "")[:300],
    }


def _compat():
    """The addon's series differences (imported inside Odoo only: this module is also imported without it)."""
    from odoo.addons.mail_graph_api import compat

    return compat
