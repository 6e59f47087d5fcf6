"""What every section of the suite returns, and the table the one command prints."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple


@dataclass
class Check:
    """One row: a fault kind, a security check, a load run... with what was expected and what was seen."""

    section: str  # "faults", "duplicates", "concurrency", "fuzzing", "security"
    name: str
    expected: str
    observed: str
    ok: bool


@dataclass
class SectionResult:
    checks: List[Check] = field(default_factory=list)
    # Figures the summary adds up across sections, e.g. {"mails_lost": 0, "duplicates": 0, "fuzz_examples": 10000}
    figures: Dict[str, int] = field(default_factory=dict)


SUMMARY_ROWS = (
    # (label, figure(s)): two figures are "run / passed" (red unless equal), one is a count (red unless 0)
    ("fault kinds run / survived", ("fault_kinds", "fault_kinds_survived")),
    ("mails lost", ("mails_lost",)),
    ("duplicates (at the fake, by Message-ID)", ("duplicates",)),
    ("incoming fault kinds run / survived", ("incoming_kinds", "incoming_kinds_survived")),
    ("incoming: messages lost", ("incoming_lost",)),
    ("incoming: messages processed twice", ("incoming_twice",)),
    ("fuzz examples", ("fuzz_examples",)),
    ("fuzz: distinct escapes from the GraphMailError tree", ("fuzz_escapes",)),
    ("security checks run / passed", ("security_checks", "security_passed")),
    ("concurrency checks run / passed", ("concurrency_checks", "concurrency_passed")),
    ("load run: mails drained by 2 workers", ("load_mails",)),
    ("load run: token refreshes (limit 2)", ("load_token_refreshes",)),
    ("load run: max Graph requests in flight per mailbox (limit 4)", ("load_max_in_flight",)),
)
LIMITS = {"load_token_refreshes": 2, "load_max_in_flight": 4}  # red above the limit


def summary(sections: Dict[str, SectionResult]) -> List[Tuple[str, str, bool]]:
    """(label, value, ok) rows of the summary table, for the figures the sections that ran reported (added up
    across sections: duplicates come from the fault matrix and from the concurrency runs)."""
    figures: Dict[str, int] = {}
    for result in sections.values():
        for key, value in result.figures.items():
            figures[key] = figures.get(key, 0) + value
    rows = []
    for label, keys in SUMMARY_ROWS:
        if not all(key in figures for key in keys):
            continue
        values = [figures[key] for key in keys]
        if len(values) == 2:
            ok = values[0] > 0 and values[0] == values[1]
            rows.append((label, f"{values[0]} / {values[1]}", ok))
        elif keys[0] == "fuzz_examples":
            rows.append((label, f"{values[0]:,}", values[0] >= max(10_000, figures.get("fuzz_target", 0))))
        elif keys[0] == "load_mails":
            rows.append((label, f"{values[0]:,}", values[0] > 0))
        elif keys[0] in LIMITS:
            rows.append((label, str(values[0]), values[0] <= LIMITS[keys[0]]))
        else:
            rows.append((label, str(values[0]), values[0] == 0))
    return rows


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], wrap: int = 0) -> str:
    """A plain text table; ``wrap`` folds the last column at that width."""
    folded: List[List[str]] = []
    for row in rows:
        cells = [str(cell) for cell in row]
        if wrap and len(cells[-1]) > wrap:
            pieces = textwrap.wrap(cells[-1], wrap) or [""]
            folded.append([*cells[:-1], pieces[0]])
            folded.extend([*([""] * (len(cells) - 1)), piece] for piece in pieces[1:])
        else:
            folded.append(cells)
    widths = [max(len(str(r[i])) for r in [list(headers), *folded]) for i in range(len(headers))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [line.format(*headers).rstrip(), line.format(*("-" * w for w in widths)).rstrip()]
    out += [line.format(*r).rstrip() for r in folded]
    return "\n".join(out)


def render(sections: Dict[str, SectionResult], wrap: int = 100) -> Tuple[str, bool]:
    """The full report (per-check rows, then the summary) and whether everything is green."""
    parts = []
    for name, result in sections.items():
        rows = [("ok" if c.ok else "RED", c.name, c.expected, c.observed) for c in result.checks]
        if not rows:
            continue
        parts.append(f"== {name} ==")
        detail = []
        for status, check_name, expected, observed in rows:
            detail.append((status, check_name, f"expected: {expected}"))
            detail.append(("", "", f"observed: {observed}"))
        parts.append(table(("", "check", "expected / observed"), detail, wrap=wrap))
        parts.append("")
    rows = summary(sections)
    all_ok = all(ok for _, _, ok in rows) and all(c.ok for r in sections.values() for c in r.checks)
    parts.append("== summary ==")
    parts.append(table(("", "what", "value"), [("ok" if ok else "RED", label, value) for label, value, ok in rows]))
    return "\n".join(parts), all_ok
