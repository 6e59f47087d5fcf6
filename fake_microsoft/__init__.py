"""A strict, inspectable fake of the Microsoft identity platform and the Graph mail endpoints.

See docs/architecture.md ("Fake Microsoft") for the URL layout, the control API and the defaults.
"""

from __future__ import annotations

from .client import FakeControl, FakeControlError
from .defaults import DEFAULTS
from .server import FakeMicrosoft

__all__ = ["DEFAULTS", "FakeControl", "FakeControlError", "FakeMicrosoft"]
