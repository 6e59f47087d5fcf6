# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
"""Everything that differs between the Odoo series this addon supports, in one place.

Each branch names the series it serves. Models and views stay single-sourced: the views are written for
18.0+ (``<list>``) and ``list_to_tree`` adapts them for 17.0 as they are stored.
"""

from __future__ import annotations

import contextlib
import re

from odoo import modules, release

SERIES = release.version_info[0]

# 19.0 renamed the two ir.mail_server methods we hook into (names ending in "__"); 17.0, 18.0 use the
# public names.
CONNECT_METHOD = "_connect__" if SERIES >= 19 else "connect"
PREPARE_METHOD = "_prepare_email_message__" if SERIES >= 19 else "_prepare_email_message"


BUILD_METHOD = "_build_email__" if SERIES >= 19 else "build_email"


def build_email(mail_server_model, *args, **kwargs):
    """Odoo's own message builder (19.0: ``_build_email__``)."""
    return getattr(mail_server_model, BUILD_METHOD)(*args, **kwargs)


def prepare_email_message(mail_server_model, message, smtp_session):
    """Odoo's own envelope preparation: (smtp_from, smtp_to_list, message) with Bcc removed."""
    return getattr(mail_server_model, PREPARE_METHOD)(message, smtp_session)


def _odoo_test_gate(env) -> bool:
    if SERIES >= 19:
        # 19.0: the classmethod IrMailServer._disable_send()
        return bool(env["ir.mail_server"]._disable_send())
    if SERIES >= 18:
        # 18.0: connect()/send_email() look at modules.module.current_test
        return bool(modules.module.current_test)
    # 17.0: IrMailServer._is_test_mode() (the testing thread flag or the registry's test mode)
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
    # 17.0: shadow _is_test_mode() on the registry class for the call
    with _shadow_classmethod(env, "_is_test_mode", lambda self: False):
        yield


def queue_send_gate_lifted(env, smtp_session_is_graph: bool):
    """19.0's mail.mail._send() itself skips sending while tests run (IrMailServer._disable_send()); 17.0 and
    18.0 only gate connect()/send_email(), which our Graph path already handles. Lift it for our own tests'
    Graph sessions only."""
    if SERIES >= 19 and smtp_session_is_graph and env.context.get("mail_graph_api_send_in_tests"):
        return _shadow_classmethod(env, "_disable_send", classmethod(lambda cls: False))
    return contextlib.nullcontext()


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


_LIST_TAG = re.compile(r"<(/?)list(?=[\s>/])")


def list_to_tree(arch: str) -> str:
    """17.0 calls list views ``<tree>``; 18.0 renamed them ``<list>`` (and 19.0 refuses ``<tree>``)."""
    if SERIES >= 18 or not arch or "<list" not in arch:
        return arch
    return _LIST_TAG.sub(r"<\1tree", arch)


def registry_in_test_mode(env) -> bool:
    """Whether registry.cursor() hands out the running test's transaction."""
    if SERIES >= 19:
        # 19.0: the test case patches registry.cursor; there is no registry flag any more
        return bool(modules.module.current_test)
    return env.registry.in_test_mode()  # 17.0, 18.0


def enter_registry_test_mode(test_class) -> None:
    """Make registry.cursor() (our log rows, token renewals) see the test transaction, for one test class."""
    if SERIES >= 19:
        # 19.0: a classmethod of the test case, which registers its own cleanup
        if not test_class._registry_patched:
            test_class.registry_enter_test_mode_cls()
        return
    # 17.0, 18.0: the registry's own test mode
    if test_class.registry.test_cr is None:
        test_class.registry.enter_test_mode(test_class.cr)
        test_class.addClassCleanup(test_class.registry.leave_test_mode)
