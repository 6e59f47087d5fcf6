# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
"""Everything that differs between the Odoo series this addon supports, in one place.

Each branch names the series it serves. Models and views stay single-sourced: the views are written for
18.0+ and ``adapt_arch`` adapts them for older series as they are loaded (``legacy_views``).
"""

from __future__ import annotations

import contextlib
import threading

from odoo import modules, release
from odoo.tools import email_normalize

from odoo.addons.base.models.ir_mail_server import extract_rfc2822_addresses

from . import legacy_views

SERIES = release.version_info[0]

# 19.0 renamed the two ir.mail_server methods we hook into (names ending in "__"); 17.0, 18.0 use the
# public names.
CONNECT_METHOD = "_connect__" if SERIES >= 19 else "connect"
PREPARE_METHOD = "_prepare_email_message__" if SERIES >= 19 else "_prepare_email_message"


# fetchmail.server (Incoming Mail Servers) is part of mail from 16.0; 14.0/15.0 ship it as the fetchmail module.
FETCHMAIL_IN_MAIL = SERIES >= 16

BUILD_METHOD = "_build_email__" if SERIES >= 19 else "build_email"


def build_email(mail_server_model, *args, **kwargs):
    """Odoo's own message builder (19.0: ``_build_email__``)."""
    return getattr(mail_server_model, BUILD_METHOD)(*args, **kwargs)


# The parameters of Odoo's connect() and send_email() in order: Odoo passes some by position (14.0's
# send_email() calls connect(host, port, user, password, encryption, smtp_debug, mail_server_id=...)), so our
# overrides read them by name from this list and hand Odoo's own arguments on untouched.
if SERIES >= 16:
    # 16.0+: allow_archived added
    CONNECT_PARAMS = ("host", "port", "user", "password", "encryption", "smtp_from", "ssl_certificate",
                      "ssl_private_key", "smtp_debug", "mail_server_id", "allow_archived")  # fmt: skip
elif SERIES == 15:
    CONNECT_PARAMS = ("host", "port", "user", "password", "encryption", "smtp_from", "ssl_certificate",
                      "ssl_private_key", "smtp_debug", "mail_server_id")  # fmt: skip
else:  # 14.0: no smtp_from, no certificates
    CONNECT_PARAMS = ("host", "port", "user", "password", "encryption", "smtp_debug", "mail_server_id")
if SERIES >= 15:
    SEND_EMAIL_PARAMS = ("mail_server_id", "smtp_server", "smtp_port", "smtp_user", "smtp_password",
                         "smtp_encryption", "smtp_ssl_certificate", "smtp_ssl_private_key", "smtp_debug",
                         "smtp_session")  # fmt: skip
else:  # 14.0: no certificates
    SEND_EMAIL_PARAMS = ("mail_server_id", "smtp_server", "smtp_port", "smtp_user", "smtp_password",
                         "smtp_encryption", "smtp_debug", "smtp_session")  # fmt: skip


def named_arguments(names, args, kwargs) -> dict:
    """Odoo's positional and keyword arguments of one call, all by name."""
    return dict(zip(names, args), **kwargs)


def prepare_email_message(mail_server_model, message, smtp_session):
    """Odoo's own envelope preparation: (smtp_from, smtp_to_list, message) with Bcc removed.

    19.0 adds the other external recipients of a notification to each copy's To header (``X-Msg-To-Add``, so
    that Reply All reaches them) without adding them to the SMTP envelope. Graph delivers to every address in
    To: each of them would get one copy per recipient. For Graph the header is dropped, so To shows the
    copy's own recipients and every copy goes exactly where Odoo's envelope sends it."""
    del message["X-Msg-To-Add"]
    if SERIES >= 15:
        return getattr(mail_server_model, PREPARE_METHOD)(message, smtp_session)
    return _prepare_email_message_14(mail_server_model, message)


def _prepare_email_message_14(mail_server_model, message):
    """14.0 has no _prepare_email_message: the envelope part of its send_email(), line for line (the envelope
    sender from Return-Path, the bounce address or From; recipients from To, Cc and Bcc; Bcc removed;
    X-Forge-To). 14.0 rewrites From earlier, in build_email()."""

    smtp_from = message["Return-Path"] or mail_server_model._get_default_bounce_address() or message["From"]
    assert smtp_from, "The Return-Path or From header is required for any outbound email"
    from_rfc2822 = extract_rfc2822_addresses(smtp_from)
    assert from_rfc2822, (
        f"Malformed 'Return-Path' or 'From' address: {smtp_from!r} - It should contain one valid plain ASCII email"
    )
    smtp_from = from_rfc2822[-1]
    email_to, email_cc, email_bcc = message["To"], message["Cc"], message["Bcc"]
    del message["Bcc"]
    smtp_to_list = [
        address for base in (email_to, email_cc, email_bcc) for address in extract_rfc2822_addresses(base) if address
    ]
    assert smtp_to_list, mail_server_model.NO_VALID_RECIPIENT  # mail.mail._send() matches this text
    x_forge_to = message["X-Forge-To"]
    if x_forge_to:
        del message["X-Forge-To"]
        del message["To"]
        message["To"] = x_forge_to
    return smtp_from, smtp_to_list, message


def find_mail_server(mail_server_model, smtp_from):
    """The server Odoo's connect() picks when it is given neither a server nor a host."""
    if SERIES >= 15:
        return mail_server_model._find_mail_server(smtp_from)[0]
    # 14.0: the first server by sequence (no from_filter)
    return mail_server_model.search([], order="sequence", limit=1)


def has_from_filter() -> bool:
    return SERIES >= 15  # 14.0 has no from_filter


def fallback_connect_kwargs(server, smtp_from) -> dict:
    """connect() arguments for the SMTP fallback (14.0's connect() takes no smtp_from)."""
    if SERIES >= 15:
        return {"mail_server_id": server.id, "smtp_from": smtp_from}
    return {"mail_server_id": server.id}


def normalize_single_email(text):
    """The one address of ``text`` normalized, or False (16.0 calls the single-address mode strict=True,
    14.0 and 15.0 force_single=True, their default)."""
    return email_normalize(text, strict=True) if SERIES >= 16 else email_normalize(text)


# mail.mail and mail.notification failure types: 14.0 has its own names, and no failure_type on mail.mail.
_FAILURE_TYPES_14 = {"mail_smtp": "SMTP", "mail_email_invalid": "RECIPIENT", "unknown": "UNKNOWN"}
MAIL_HAS_FAILURE_TYPE = SERIES >= 15
NOTIFICATION_MAIL_FIELD = "mail_mail_id" if SERIES >= 15 else "mail_id"


def failure_type(name: str) -> str:
    return name if SERIES >= 15 else _FAILURE_TYPES_14.get(name, "UNKNOWN")


def mail_failure_values(failure_type_name, reason) -> dict:
    """Values that record a failure on a mail.mail."""
    values = {"failure_reason": reason}
    if MAIL_HAS_FAILURE_TYPE:
        values["failure_type"] = failure_type_name
    return values


def retry_mails(mails):
    """Odoo's Retry button: action_retry() (15.0+); 14.0 has mark_outgoing() only."""
    if SERIES >= 15:
        return mails.action_retry()
    return mails.filtered(lambda mail: mail.state == "exception").mark_outgoing()


def _odoo_test_gate(env) -> bool:
    if SERIES <= 14:
        # 14.0: connect() looks at the testing thread flag, send_email() also at the registry's test mode
        return bool(getattr(threading.current_thread(), "testing", False) or env.registry.in_test_mode())
    if SERIES >= 19:
        # 19.0: the classmethod IrMailServer._disable_send()
        return bool(env["ir.mail_server"]._disable_send())
    if SERIES >= 18:
        # 18.0: connect()/send_email() look at modules.module.current_test
        return bool(modules.module.current_test)
    # 15.0-17.0: IrMailServer._is_test_mode() (the testing thread flag or the registry's test mode)
    return bool(env["ir.mail_server"]._is_test_mode())


def sending_disabled_by_test_mode(env) -> bool:
    """Odoo blocks real sending while tests run; our own tests opt back in through the context."""
    if env.context.get("mail_graph_api_send_in_tests"):
        return False
    return _odoo_test_gate(env)


@contextlib.contextmanager
def _shadow_classmethod(env, name, value):
    model_class = type(env["ir.mail_server"])
    setattr(model_class, name, value)
    try:
        yield
    finally:
        delattr(model_class, name)


@contextlib.contextmanager
def smtp_allowed_in_tests(env):
    """Let the SMTP fallback really connect while our own tests run (they opt in through the context).

    Outside tests, and for other modules' tests, this changes nothing.
    """
    if not (env.context.get("mail_graph_api_send_in_tests") and _odoo_test_gate(env)):
        yield
        return
    if SERIES >= 19:
        # 19.0: shadow the classmethod _disable_send() on the registry class for the call
        with _shadow_classmethod(env, "_disable_send", classmethod(lambda cls: False)):
            yield
        return
    if SERIES >= 18:
        # 18.0: the module-level current_test flag
        current = modules.module.current_test
        modules.module.current_test = None
        try:
            yield
        finally:
            modules.module.current_test = current
        return
    if SERIES <= 14:
        # 14.0: connect() looks at the testing thread flag only
        thread = threading.current_thread()
        testing = getattr(thread, "testing", False)
        thread.testing = False
        try:
            yield
        finally:
            thread.testing = testing
        return
    # 15.0-17.0: shadow _is_test_mode() on the registry class for the call
    with _shadow_classmethod(env, "_is_test_mode", lambda self: False):
        yield


def queue_send_gate_lifted(env, smtp_session_is_graph: bool):
    """19.0's mail.mail._send() itself skips sending while tests run (IrMailServer._disable_send()); 17.0 and
    18.0 only gate connect()/send_email(), which our Graph path already handles. Lift it for our own tests'
    Graph sessions only."""
    if SERIES >= 19 and smtp_session_is_graph and env.context.get("mail_graph_api_send_in_tests"):
        return _shadow_classmethod(env, "_disable_send", classmethod(lambda cls: False))
    return contextlib.nullcontext()


def queue_delivers_bcc_header() -> bool:
    """17.0 keeps only To and Cc in mail.mail's envelope (send_validated_to); 14.0-16.0 deliver a Bcc header."""
    return SERIES < 17


def flush_all(env) -> None:
    """Write pending ORM changes to the database (16.0+: env.flush_all(); 14.0, 15.0: env["base"].flush())."""
    if SERIES >= 16:
        env.flush_all()
    else:
        env["base"].flush()


def invalidate(records, fnames=None) -> None:
    """Drop ``fnames`` of ``records`` from the cache (16.0+: invalidate_recordset, which flushes first)."""
    if SERIES >= 16:
        records.invalidate_recordset(fnames)
    else:
        records.env["base"].flush()
        records.invalidate_cache(fnames=fnames, ids=records.ids)


def invalidate_all(env) -> None:
    if SERIES >= 16:
        env.invalidate_all()
    else:
        env["base"].flush()
        env["base"].invalidate_cache()


def has_native_max_email_size() -> bool:
    """18.0 added ir.mail_server.max_email_size and _get_max_email_size(); 17.0 has neither."""
    return SERIES >= 18


def test_connection_kwargs(autodetect_max_email_size):
    """18.0+ test_smtp_connection(autodetect_max_email_size=False); 17.0 takes no argument."""
    return {"autodetect_max_email_size": autodetect_max_email_size} if SERIES >= 18 else {}


def form_url(record) -> str:
    """Where the browser returns to after signing in: the record's form."""
    if SERIES >= 18:
        # 18.0, 19.0: path-based client URLs
        return f"/odoo/{record._name}/{record.id}"
    # 17.0: hash-based client URLs
    return f"/web#model={record._name}&id={record.id}&view_type=form"


def home_url() -> str:
    return "/odoo" if SERIES >= 18 else "/web"  # 18.0 moved the web client to /odoo


def new_mail_server_url() -> str:
    """The form of a new outgoing mail server, as the browser opens it."""
    if SERIES >= 18:
        return "/odoo/ir.mail_server/new"
    return "/web#model=ir.mail_server&view_type=form&action=base.action_ir_mail_server_list"  # 17.0


def count_by(model, domain, field: str) -> dict:
    """{id of the many2one ``field``: number of records} for the records of ``domain``."""
    if SERIES >= 17:
        # 17.0+: _read_group returns (record, count) tuples
        return {record.id: count for record, count in model._read_group(domain, [field], ["__count"])}
    # 14.0-16.0: read_group dicts with the value as (id, name) and the count as <field>_count
    groups = model.read_group(domain, [field], [field])
    return {group[field][0]: group[field + "_count"] for group in groups if group[field]}


def adapt_arch(arch: str) -> str:
    """Our views are written for 18.0+: ``<list>`` becomes ``<tree>`` before 18.0, and 17.0's modifier
    expressions become ``attrs`` domains before 17.0 (``legacy_views``)."""
    return legacy_views.adapt(arch, SERIES)


def adapt_view_mode(mode: str) -> str:
    """An action's ``list`` view mode is ``tree`` before 18.0."""
    return legacy_views.view_mode(mode, SERIES)


def registry_in_test_mode(env) -> bool:
    """Whether registry.cursor() hands out the running test's transaction."""
    if SERIES >= 19:
        # 19.0: the test case patches registry.cursor; there is no registry flag any more
        return bool(modules.module.current_test)
    return env.registry.in_test_mode()  # 17.0, 18.0


def enter_registry_test_mode(test_class) -> None:
    """Make registry.cursor() (our log rows, token renewals) see the test transaction, for one test class."""
    if SERIES < 17 and getattr(test_class, "registry_test_mode", False):
        return  # 14.0-16.0: HTTP test cases enter the registry's test mode themselves, in setUp(), per test
    if SERIES >= 19:
        # 19.0: a classmethod of the test case, which registers its own cleanup
        if not test_class._registry_patched:
            test_class.registry_enter_test_mode_cls()
        return
    # 17.0, 18.0: the registry's own test mode
    if test_class.registry.test_cr is None:
        test_class.registry.enter_test_mode(test_class.cr)
        test_class.addClassCleanup(test_class.registry.leave_test_mode)
