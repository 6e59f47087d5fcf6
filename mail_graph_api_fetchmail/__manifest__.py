# Copyright 2026 The mail_graph_api authors
# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
{
    "name": "Microsoft Graph Mail Gateway: Incoming Mail Servers (Odoo 14.0/15.0)",
    "summary": "The 'Microsoft Graph' Incoming Mail Server type where fetchmail is a module of its own",
    # From 16.0 Incoming Mail Servers are part of mail and mail_graph_api carries this itself; on 14.0 and 15.0
    # this bridge installs by itself as soon as both mail_graph_api and fetchmail are installed.
    "version": "1.0.0",
    "category": "Productivity/Discuss",
    "license": "LGPL-3",
    "author": "mail_graph_api authors",
    "website": "https://github.com/mail-graph-api/mail_graph_api",
    "depends": ["mail_graph_api", "fetchmail"],
    # The one view file of mail_graph_api, loaded here where fetchmail.server exists.
    "data": ["../mail_graph_api/views/fetchmail_server_views.xml"],
    "auto_install": True,
    "installable": True,
}
