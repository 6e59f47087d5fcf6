"""What every section of the suite returns, and the table the one command prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List


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
