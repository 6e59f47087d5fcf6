"""``python -m reliability`` (``./dev reliability``): run the suite and print one table; exit 1 on any red row.

Sections: ``faults`` (the fault matrix through Odoo's real mail queue), ``fuzzing`` (hypothesis on the core),
``security`` (secrets, logs, OAuth state, open redirect, the server log), ``concurrency`` (workers at once, and a
load run: 100 mails by default, ``--load N`` for N). See docs/reliability.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from tools.odoo_tier import find_odoo

from .report import Check, SectionResult, render

REPO = Path(__file__).resolve().parent.parent

SECTIONS = ("faults", "incoming", "fuzzing", "security", "concurrency")


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


def start_fuzzing(examples: int, fuzz_seed: str) -> subprocess.Popen:
    """Fuzzing needs no Odoo: it runs in its own process while Odoo installs and serves (progress to a log)."""
    log = REPO / "var" / "logs" / "reliability-fuzzing.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    step(f"Fuzzing {examples:,} examples in the background (progress in {log})")
    return subprocess.Popen(
        [sys.executable, "-m", "reliability.fuzzing", "--examples", str(examples), "--seed", fuzz_seed, "--json"],
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
        cwd=str(REPO),
    )


def fuzz_result(proc: subprocess.Popen) -> SectionResult:
    out, _ = proc.communicate()
    try:
        data = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return SectionResult([Check("fuzzing", "fuzzing run", "completes", f"crashed (exit {proc.returncode})", False)])
    return SectionResult([Check(**row) for row in data["checks"]], data["figures"])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reliability", description=__doc__)
    parser.add_argument("--series", default=os.environ.get("MAIL_GRAPH_SERIES", "18.0"))
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma list of: " + ", ".join(SECTIONS))
    parser.add_argument("--only", default="", help="fault kinds whose name contains one of these words (comma list)")
    parser.add_argument("--fuzz-examples", type=int, default=10_000, help="total hypothesis examples (>= 10,000)")
    parser.add_argument("--fuzz-seed", default="6", help="hypothesis seed (default 6, a stable report) or 'random'")
    parser.add_argument(
        "--load",
        type=int,
        default=0,
        metavar="N",
        help="mails of the concurrency section's load run (2 workers, one mailbox, token expiry halfway); "
        "default 0: the short run of 100 mails",
    )
    parser.add_argument("--keep-db", action="store_true", help="keep the database (mga_rel_<pid>) afterwards")
    args = parser.parse_args(argv)
    selected = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(selected) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")

    started = time.monotonic()
    results: Dict[str, SectionResult] = {}
    fuzzing = start_fuzzing(args.fuzz_examples, args.fuzz_seed) if "fuzzing" in selected else None
    if {"faults", "incoming", "security", "concurrency"} & set(selected) and not find_odoo(args.series):
        print(
            f"SKIPPED: no Odoo {args.series}: the faults, security and concurrency sections need it "
            f"(see tools/odoo_tier.py for where Odoo is looked for)",
            flush=True,
        )
        selected = [s for s in selected if s == "fuzzing"]
    if {"faults", "incoming", "security", "concurrency"} & set(selected):
        from . import concurrency, faults, incoming, security
        from .stack import Stack

        stack = Stack(args.series)
        step(f"Odoo {args.series}: database {stack.db} with mail_graph_api, fake Microsoft on {stack.fake.url}")
        try:
            stack.create_database()
            foreign = security.foreign_states(stack) if "security" in selected else {}
            stack.start_server()
            stack.configure()
            step(f"Odoo serving on {stack.url} (log {stack.server_log}); Graph server connected through OAuth")
            if "faults" in selected:
                step("Fault matrix")
                only = [w.strip() for w in args.only.split(",") if w.strip()]
                results["faults"] = faults.run_section(stack, only=only, progress=print)
            if "incoming" in selected:
                step("Incoming: bounces and replies read over Graph, under faults")
                results["incoming"] = incoming.run_section(stack, progress=print)
            if "security" in selected:
                step("Security")
                results["security"] = security.run_section(stack, foreign)
            if "concurrency" in selected:
                step("Concurrency")
                load = args.load or concurrency.LOAD_DEFAULT
                results["concurrency"] = concurrency.run_section(stack, progress=print, load=load)
            stack.stop_server()
            if "security" in selected:
                results["security"].checks.append(security.log_check(stack))
                security.count(results["security"])
        finally:
            stack.stop(keep=args.keep_db)
    if fuzzing is not None:
        step("Fuzzing: waiting for the background run")
        results["fuzzing"] = fuzz_result(fuzzing)
    text, ok = render({name: results[name] for name in SECTIONS if name in results})
    print()
    print(text)
    print(f"\n{'all green' if ok else 'RED rows above'} ({time.monotonic() - started:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
