# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
import json
import logging

from werkzeug.exceptions import Forbidden

from odoo import _, http
from odoo.http import request

from graph_mail import DelegatedAuthFlow, GraphMailError
from graph_mail.errors import error_from_token_response

from .. import compat
from ..oauth_state import InvalidState, read_state

_logger = logging.getLogger(__name__)


class GraphAuthController(http.Controller):
    @http.route("/mail_graph_api/auth/callback", type="http", auth="user", methods=["GET"])
    def graph_auth_callback(self, state=None, code=None, error=None, error_description=None, **kwargs):
        """Microsoft sends the browser back here with a code (or an error) after the administrator signed in."""
        env = request.env
        if not env.is_admin():
            _logger.warning("Microsoft Graph sign-in callback refused for non-admin user #%s", env.uid)
            raise Forbidden()
        try:
            payload = read_state(env, state)
        except InvalidState as refusal:
            _logger.warning("Microsoft Graph sign-in callback refused: %s", refusal)
            return self._page(False, _("Sign-in refused"), str(refusal), _("Nothing was stored."))
        server = env["ir.mail_server"].sudo().browse(payload["sid"]).exists()
        pending = server.graph_oauth_flow if server else None
        flow = json.loads(pending) if pending else None
        if not flow or flow.get("state") != state:
            _logger.warning("Microsoft Graph sign-in callback with an unknown or already used state")
            return self._page(
                False,
                _("Sign-in refused"),
                _("This sign-in link was already used or replaced by a newer one."),
                _("Nothing was stored. Start again with “Authenticate with Microsoft”."),
                server,
            )
        server.graph_oauth_flow = False  # single use, whatever happens next
        if error:
            failure = error_from_token_response({"error": error, "error_description": error_description or ""})
            server._graph_record_error(failure, own_cursor=False)
            return self._page(False, _("Microsoft refused the sign-in"), str(failure), failure.hint, server)
        try:
            tokens = DelegatedAuthFlow(server._graph_credentials(), server._graph_redirect_uri()).finish(
                flow, {"state": state, "code": code or "", **kwargs}
            )
        except GraphMailError as failure:
            server._graph_record_error(failure, own_cursor=False)
            return self._page(False, _("Microsoft refused the sign-in"), str(failure), failure.hint, server)
        server._graph_store_tokens(tokens)
        _logger.info("Mail server #%s connected to Microsoft Graph as %s", server.id, tokens.account)
        return self._page(
            True,
            _("Connected to Microsoft"),
            _("Mail server “%(name)s” now sends as %(account)s.", name=server.name, account=tokens.account),
            _("Use “Test Connection” to check the mailbox."),
            server,
        )

    def _page(self, success, title, message, hint=None, server=None):
        return request.render(
            "mail_graph_api.oauth_result",
            {
                "success": success,
                "title": title,
                "message": message,
                "hint": hint,
                # Always a path we build from our own record: never a URL taken from the request.
                "back_url": compat.form_url(server._graph_form_record()) if server else compat.home_url(),
            },
        )
