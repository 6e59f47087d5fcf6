# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
"""Our views and actions are written once, for 18.0+; older series get them adapted as they load (see
``legacy_views``). Only this module's own records are touched, never another module's."""

from odoo import api, models

from .. import compat

OURS = ("mail_graph_api.", "mail_graph_api_fetchmail.")


def _adapt_ours(data_list, field, adapt):
    """Rewrite ``field`` of the records this module loads with ``adapt`` (the others pass untouched)."""
    for data in data_list:
        values = data["values"]
        if (data.get("xml_id") or "").startswith(OURS) and values.get(field):
            values[field] = adapt(values[field])


def _for_this_series(data):
    """14.0/15.0: our Incoming Mail Server view comes with the bridge mail_graph_api_fetchmail (it needs the
    fetchmail module), not with this module, which loads the same file."""
    return compat.FETCHMAIL_IN_MAIL or not (
        (data.get("xml_id") or "").startswith("mail_graph_api.") and data["values"].get("model") == "fetchmail.server"
    )


class IrUiView(models.Model):
    _inherit = "ir.ui.view"

    @api.model
    def _load_records(self, data_list, update=False):
        data_list = [data for data in data_list if _for_this_series(data)]
        _adapt_ours(data_list, "arch", compat.adapt_arch)
        return super()._load_records(data_list, update=update)


class IrActionsActWindow(models.Model):
    _inherit = "ir.actions.act_window"

    @api.model
    def _load_records(self, data_list, update=False):
        _adapt_ours(data_list, "view_mode", compat.adapt_view_mode)
        return super()._load_records(data_list, update=update)
