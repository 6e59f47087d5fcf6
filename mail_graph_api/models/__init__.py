from . import ir_attachment, ir_mail_server, ir_ui_view, mail_graph_api_log, mail_mail
