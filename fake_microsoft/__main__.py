"""``python -m fake_microsoft --port 8765``: serve the fake and print what to configure."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import List, Optional

from .server import FakeMicrosoft


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fake_microsoft", description=__doc__)
    parser.add_argument("--port", type=int, default=8765, help="port to listen on (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    args = parser.parse_args(argv)
    fake = FakeMicrosoft(port=args.port, host=args.host).start()
    config = fake.config()
    lines = [
        f"Fake Microsoft listening on {fake.url}",
        f"  authority URL : {fake.authority_url}   (msal: https://127.0.0.1:{fake.port}/<tenant>, scheme "
        "rewritten to http by the http_client)",
        f"  Graph URL     : {fake.graph_url}",
        f"  tenant id     : {config['tenant_id']}   (or {config['tenant_domain']})",
        f"  client id     : {config['client_id']}",
        f"  client secret : {config['client_secret']}",
        f"  mailboxes     : {', '.join(u['userPrincipalName'] for u in config['users'])}",
        f"  redirect URIs : {', '.join(config['redirect_uris'])}",
        f"  control URL   : {fake.control_url}/   (reset, config, messages, calls, faults, tokens)",
        "Press Ctrl-C to stop.",
    ]
    print("\n".join(lines), flush=True)
    # Ctrl-C and kill stop it cleanly, also when started in the background (where a shell ignores SIGINT for its
    # children, and Python then never raises KeyboardInterrupt).
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
