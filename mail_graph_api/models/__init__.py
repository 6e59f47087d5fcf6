from .. import compat
from . import (
    fetchmail_server,
    ir_attachment,
    ir_mail_server,
    ir_ui_view,
    mail_graph_alert,
    mail_graph_api_log,
    mail_graph_inbox,
    mail_mail,
)

if compat.FETCHMAIL_IN_MAIL:
    fetchmail_server.define("mail_graph_api")
# 14.0/15.0: defined by the auto-installed bridge mail_graph_api_fetchmail (fetchmail is a module of its own).
