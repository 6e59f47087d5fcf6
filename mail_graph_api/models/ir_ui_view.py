# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
"""Our views and actions are written once, for 18.0+; older series get them adapted as they load (see
``legacy_views``). Only this module's own records are touched, never another module's."""

from odoo import api, models

from .. import compat


def _ours(data):
    return (data.get("xml_id") or "").startswith("mail_graph_api.")


class IrUiView(models.Model):
    _inherit = "ir.ui.view"

    @api.model
    def _load_records(self, data_list, update=False):
        for data in data_list:
            if _ours(data) and data["values"].get("arch"):
                data["values"]["arch"] = compat.adapt_arch(data["values"]["arch"])
        return super()._load_records(data_list, update=update)


class IrActionsActWindow(models.Model):
    _inherit = "ir.actions.act_window"

    @api.model
    def _load_records(self, data_list, update=False):
        for data in data_list:
            if _ours(data) and data["values"].get("view_mode"):
                data["values"]["view_mode"] = compat.adapt_view_mode(data["values"]["view_mode"])
        return super()._load_records(data_list, update=update)
