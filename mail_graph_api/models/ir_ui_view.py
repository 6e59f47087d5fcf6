# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
from odoo import api, models

from .. import compat

# Models whose views this addon writes with 18.0's <list>; on 17.0 they are stored as <tree>.
OUR_MODELS = ("mail.graph.api.log", "ir.mail_server")


class IrUiView(models.Model):
    _inherit = "ir.ui.view"

    @api.model_create_multi
    def create(self, vals_list):
        for vals in vals_list:
            if vals.get("model") in OUR_MODELS and vals.get("arch"):
                vals["arch"] = compat.list_to_tree(vals["arch"])
        return super().create(vals_list)

    def write(self, vals):
        if vals.get("arch") and set(self.mapped("model")) <= set(OUR_MODELS):
            vals = dict(vals, arch=compat.list_to_tree(vals["arch"]))
        return super().write(vals)
