# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
"""Everything that differs between the Odoo series this addon supports, in one place.

Each branch names the series it serves. Models and views stay single-sourced.
"""

from __future__ import annotations

import contextlib

from odoo import modules, release

SERIES = release.version_info[0]


def sending_disabled_by_test_mode(env) -> bool:
    """Odoo blocks real sending while tests run; our own tests opt back in through the context."""
    if env.context.get("mail_graph_api_send_in_tests"):
        return False
    if SERIES >= 19:
        # 19.0: the test gate is the classmethod IrMailServer._disable_send()
        return bool(env["ir.mail_server"]._disable_send())
    # 17.0, 18.0: connect()/send_email() look at modules.module.current_test
    return bool(modules.module.current_test)


def has_native_max_email_size() -> bool:
    """18.0 added ir.mail_server.max_email_size and _get_max_email_size(); 17.0 has neither."""
    return SERIES >= 18


@contextlib.contextmanager
def smtp_allowed_in_tests(env):
    """Let the SMTP fallback really connect while our own tests run (they opt in through the context).

    Outside tests, and for other modules' tests, this changes nothing.
    """
    if not (env.context.get("mail_graph_api_send_in_tests") and modules.module.current_test):
        yield
        return
    if SERIES >= 19:
        # 19.0: the gate is the classmethod _disable_send(); shadow it on the registry class for the call.
        model_class = type(env["ir.mail_server"])
        model_class._disable_send = classmethod(lambda cls: False)
        try:
            yield
        finally:
            del model_class._disable_send
        return
    # 17.0, 18.0: the gate is the module-level current_test flag
    current = modules.module.current_test
    modules.module.current_test = None
    try:
        yield
    finally:
        modules.module.current_test = current


def form_url(record) -> str:
    """Where the browser returns to after signing in: the record's form."""
    if SERIES >= 18:
        # 18.0, 19.0: path-based client URLs
        return f"/odoo/{record._name}/{record.id}"
    # 17.0: hash-based client URLs
    return f"/web#model={record._name}&id={record.id}&view_type=form"
