from . import ir_mail_server, mail_graph_api_log, mail_mail
