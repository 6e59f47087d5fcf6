"""Measured comparisons in real Odoo + PostgreSQL against the fake Microsoft and a local SMTP sink.

``python -m benchmarks`` (or ``./dev bench``) prints one table: Graph requests per mail, token-endpoint calls
(one and two workers), throughput Graph vs SMTP, scaling with the queue length, peak memory while sending a
100 MB attachment, and the same figures for a peer addon when ``MAIL_GRAPH_PEER_ADDON`` names its folder.
``benchmarks.jobs`` holds the functions that run inside Odoo (through tools/odoo_exec.py).
"""
