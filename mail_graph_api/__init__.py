from graph_mail import install_log_redaction

from . import controllers, models

# Odoo's access log (logger "werkzeug") prints the callback's query string: keep the authorization code out.
install_log_redaction(extra=("werkzeug",))
