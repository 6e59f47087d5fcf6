# Copyright 2026 The mail_graph_api authors
# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
{
    "name": "Microsoft Graph Mail Gateway",
    "summary": "Send outgoing mail through Microsoft Graph instead of SMTP AUTH",
    # No series prefix: Odoo prepends its own (14.0.1.0.0 ... 19.0.1.0.0) so one folder serves all six.
    "version": "1.0.0",
    "category": "Productivity/Discuss",
    "license": "LGPL-3",
    "author": "mail_graph_api authors",
    "website": "https://github.com/mail-graph-api/mail_graph_api",
    "depends": ["mail"],
    "external_dependencies": {"python": ["msal", "requests", "graph_mail"]},
    "data": [
        "security/ir.model.access.csv",
        "views/ir_mail_server_views.xml",
        "views/mail_graph_api_log_views.xml",
        "views/mail_graph_inbox_views.xml",
        "views/mail_graph_alert_views.xml",
        "views/fetchmail_server_views.xml",
        "views/mail_mail_views.xml",
        "views/templates.xml",
        "views/assets_legacy.xml",
        "data/ir_cron.xml",
        "data/ir_config_parameter.xml",
    ],
    "assets": {
        # 14.0 bundles the legacy tour through views/assets_legacy.xml. It lives outside static/tests: 18.0+
        # would load anything there as an ES module.
        "web.assets_tests": ["mail_graph_api/static/tests/tours/*.js", "mail_graph_api/static/legacy/tours/*.js"],
    },
    "installable": True,
}
