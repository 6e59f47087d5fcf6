# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
from odoo.addons.mail_graph_api import compat
from odoo.addons.mail_graph_api.models import fetchmail_server

if not compat.FETCHMAIL_IN_MAIL:
    fetchmail_server.define("mail_graph_api_fetchmail")
