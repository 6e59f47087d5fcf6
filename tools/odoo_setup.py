"""Set Odoo community up for a newcomer who has none: download, verify, extract, create its environment.

``./dev demo`` calls ``ensure_odoo(series)`` when no Odoo of that series is found (tools/odoo_tier.py): it
downloads the pinned nightly archive from Odoo's official public source (or ``$MAIL_GRAPH_ODOO_SOURCE``: a URL
or a local archive), checks that it is a whole archive of that series (and its SHA-256 when
``$MAIL_GRAPH_ODOO_SHA256`` is set), extracts it into a cache outside the repository
(``$MAIL_GRAPH_ODOO_CACHE``, default ``~/.cache/mail_graph_api/odoo``), creates a virtual environment with a
Python that series runs on and installs Odoo's requirements from PyPI with the pin fixes the series needs.
A second run finds it there. Nothing of Odoo is ever written inside this repository.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Tuple

REPO = Path(__file__).resolve().parent.parent

# Odoo's own nightly builds (https://nightly.odoo.com), one dated build per series, and the Pythons each runs on
# (the first is the one it was released for).
NIGHTLY = "https://nightly.odoo.com/{series}/nightly/src/odoo_{series}.{build}.tar.gz"
PINNED_BUILDS = {
    "14.0": "20231004",
    "15.0": "20240425",
    "16.0": "20240508",
    "17.0": "20241010",
    "18.0": "20250925",
    "19.0": "20260414",
}
PYTHONS = {
    "14.0": ("3.8",),  # 14.0's safe_eval predates 3.11; its pins build on 3.8
    "15.0": ("3.8", "3.9"),
    "16.0": ("3.10", "3.9", "3.8"),
    "17.0": ("3.11", "3.10"),
    "18.0": ("3.11", "3.12", "3.10"),
    "19.0": ("3.11", "3.12", "3.13", "3.10"),
}

# Requirement lines that do not install as pinned on the Python each series runs on here (../shared/docs/
# odoo-mail.md): (series or "*", pattern of the line, replacement; "" drops the line).
PIN_FIXES: List[Tuple[str, str, str]] = [
    ("*", r"^psycopg2==", "psycopg2-binary=="),  # a wheel instead of a build against libpq
    ("*", r"^python-ldap.*$", ""),  # only auth_ldap needs it, and it builds against libldap
    ("14.0", r"^requests==2\.21\.0.*$", "requests==2.25.1"),  # msal needs requests >= 2.25
    ("14.0", r"^idna==2\.6.*$", "idna==2.10"),
    ("14.0", r"^chardet==3\.0\.4.*$", "chardet==4.0.0"),
    ("14.0", r"^psycopg2-binary==2\.8\.5(.*)$", r"psycopg2-binary==2.8.6\1"),
    ("15.0", r"^cryptography==.*$", "cryptography==41.0.7"),  # msal needs cryptography >= 3.4 (with pyopenssl)
    ("15.0", r"^pyopenssl==.*$", "pyopenssl==23.2.0"),
    ("15.0", r"^urllib3==.*$", "urllib3==1.26.20"),  # 1.26.5 imports what cryptography 41 no longer has
    (
        "16.0",
        r"^psycopg2-binary==2\.8\.6 ; sys_platform != .win32. and python_version >= .3\.8.*$",
        'psycopg2-binary==2.9.1 ; python_version == "3.10"',
    ),
    (
        "16.0",
        r"^gevent==21\.8\.0 ; python_version > .3\.9. and python_version <= .3\.10.*$",
        'gevent==21.12.0 ; python_version == "3.10"',
    ),
]
# Built without build isolation, after these (cbor2 5.4.2 has no wheel for 3.11 and needs pkg_resources).
BUILD_FIRST = {"18.0": ["setuptools_scm<8", "--no-build-isolation cbor2==5.4.2"],
               "19.0": ["setuptools_scm<8", "--no-build-isolation cbor2==5.4.2"]}  # fmt: skip
EXTRA_PACKAGES = ["websocket-client"]  # HttpCase tours talk to Chromium through it


# Python's own guard against archive members that leave the folder, where it has one (3.8.17+, 3.12+ warns
# without it).
SAFE_EXTRACT = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


class SetupError(RuntimeError):
    """Odoo could not be set up; the message says what to do."""


class OdooUnavailable(SetupError):
    """Odoo cannot run here: it could be neither found nor downloaded, or no Python it runs on is installed."""


class PythonMissing(OdooUnavailable):
    pass


def cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mail_graph_api" / "odoo"
    return Path(os.environ.get("MAIL_GRAPH_ODOO_CACHE") or default)


def cached_odoo(series: str) -> Optional[Tuple[Path, Path]]:
    """The tree and interpreter a previous setup left in the cache, when it finished."""
    root = cache_root()
    tree, python = root / series, root / f"venv-{series}" / "bin" / "python"
    if (root / f"{series}.ready").is_file() and (tree / "odoo-bin").is_file() and python.is_file():
        return tree, python
    return None


def source_for(series: str) -> str:
    return os.environ.get("MAIL_GRAPH_ODOO_SOURCE") or NIGHTLY.format(series=series, build=PINNED_BUILDS[series])


def ensure_odoo(series: str, out=sys.stdout) -> Tuple[Path, Path]:
    """Odoo ``series`` ready to run: (tree holding odoo-bin, its environment's python)."""
    if series not in PINNED_BUILDS:
        raise SetupError(f"Odoo {series} is not a series this project supports ({', '.join(PINNED_BUILDS)})")
    found = cached_odoo(series)
    if found:
        return found
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    python = find_python(series)  # before downloading: say at once what to install
    source = source_for(series)
    say(out, f"Setting up Odoo {series} in {root} (outside this repository; a second run reuses it)")
    archive = fetch(source, root / "downloads", out)
    digest = verify(archive, series)
    say(out, f"    verified: a whole Odoo {series} archive, SHA-256 {digest}")
    tree = extract(archive, root / series, out)
    venv = create_environment(series, tree, python, root / f"venv-{series}", out)
    (root / f"{series}.ready").write_text(json.dumps({"source": source, "sha256": digest, "python": str(python)}))
    return tree, venv


def say(out, text: str) -> None:
    print(text, file=out, flush=True)


# -- download -------------------------------------------------------------------------------------------------


def fetch(source: str, downloads: Path, out) -> Path:
    """A local archive as it is; a URL downloaded (with a progress bar) into ``downloads``."""
    if "://" not in source:
        path = Path(source).expanduser()
        if not path.is_file():
            raise OdooUnavailable(f"MAIL_GRAPH_ODOO_SOURCE names {path}, which is not a file")
        say(out, f"    source: {path} (local archive)")
        return path
    downloads.mkdir(parents=True, exist_ok=True)
    target = downloads / source.rstrip("/").rsplit("/", 1)[-1]
    partial = target.with_name(target.name + ".part")
    say(out, f"    downloading {source}")
    try:
        with urllib.request.urlopen(source, timeout=30) as answer, partial.open("wb") as sink:
            total = int(answer.headers.get("Content-Length") or 0)
            bar = Progress("download", total, unit="MB", scale=1024 * 1024, out=out)
            while True:
                chunk = answer.read(1024 * 1024)
                if not chunk:
                    break
                sink.write(chunk)
                bar.advance(len(chunk))
            bar.done()
    except (urllib.error.URLError, OSError) as error:
        partial.unlink(missing_ok=True)
        raise OdooUnavailable(f"Odoo could not be downloaded from {source}: {error}") from error
    if total and partial.stat().st_size != total:
        raise SetupError(f"the download of {source} stopped at {partial.stat().st_size} of {total} bytes: run again")
    partial.replace(target)
    return target


def verify(archive: Path, series: str) -> str:
    """The archive's SHA-256, once it proved to be a whole Odoo ``series`` source archive."""
    sha256 = hashlib.sha256()
    with archive.open("rb") as stream:
        for block in iter(lambda: stream.read(1024 * 1024), b""):
            sha256.update(block)
    digest = sha256.hexdigest()
    expected = os.environ.get("MAIL_GRAPH_ODOO_SHA256")
    if expected and expected.lower() != digest:
        raise SetupError(f"{archive} has SHA-256 {digest}, not the expected {expected}: it was not used")
    try:
        with tarfile.open(archive) as tar:
            names = tar.getnames()  # reads the whole archive: a truncated one fails here
            top = _top_folder(names)
            release = tar.extractfile(f"{top}odoo/release.py") if f"{top}odoo/release.py" in names else None
            if f"{top}odoo-bin" not in names or release is None:
                raise SetupError(f"{archive} holds no Odoo source tree (odoo-bin and odoo/release.py)")
            found = _release_series(release.read().decode("utf-8", "replace"))
    except (tarfile.TarError, EOFError, OSError) as error:
        raise SetupError(f"{archive} is not a whole tar archive ({error}): delete it and run again") from error
    if found != series:
        raise SetupError(f"{archive} holds Odoo {found}, not {series}")
    return digest


def _top_folder(names: Iterable[str]) -> str:
    """``odoo-18.0.post20250925/`` when every member sits in one folder (Odoo's nightly archives), else ''."""
    names = list(names)
    tops = {name.split("/", 1)[0] for name in names if name}
    if len(tops) == 1:
        (top,) = tops
        if any(name.startswith(top + "/") for name in names):
            return top + "/"
    return ""


def _release_series(text: str) -> str:
    match = re.search(r"^version_info\s*=\s*\((?:'saas~)?(\d+)\D+(\d+)", text, re.MULTILINE)
    return f"{match.group(1)}.{match.group(2)}" if match else "unknown"


def extract(archive: Path, tree: Path, out) -> Path:
    partial = tree.with_name(tree.name + ".part")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        top = _top_folder(member.name for member in members)
        bar = Progress("extract", len(members), unit="files", scale=1, out=out)
        for member in members:
            bar.advance(1)
            name = member.name[len(top) :] if top else member.name
            if not name or name.startswith("/") or ".." in Path(name).parts or member.islnk() or member.issym():
                continue  # an archive's path never leaves the tree
            member.name = name
            tar.extract(member, partial, **SAFE_EXTRACT)
        bar.done()
    shutil.rmtree(tree, ignore_errors=True)
    partial.replace(tree)
    return tree


# -- Python and environment -----------------------------------------------------------------------------------


def find_python(series: str) -> Path:
    """An interpreter this series runs on: python3.X on PATH, under pyenv, or $MAIL_GRAPH_ODOO_<series>_PYTHON_BIN."""
    versions = PYTHONS[series]
    override = os.environ.get(f"MAIL_GRAPH_ODOO_{series.replace('.', '_')}_PYTHON_BIN")
    candidates = [Path(override)] if override else []
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    for version in versions:
        on_path = shutil.which(f"python{version}")
        if on_path:
            candidates.append(Path(on_path))
        candidates.extend(sorted(pyenv_root.glob(f"versions/{version}.*/bin/python"), reverse=True))
    for candidate in candidates:
        if _python_version(candidate) in versions:
            return candidate
    raise PythonMissing(
        f"Odoo {series} runs on Python {' or '.join(versions)} and none was found (python{versions[0]} on PATH or "
        f"under pyenv). Install one (your distribution's python{versions[0]} with its venv module, or "
        f"`pyenv install {versions[0]}`) and run again."
    )


def _python_version(python: Path) -> str:
    try:
        done = subprocess.run(
            [str(python), "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def fixed_requirements(series: str, text: str) -> str:
    """Odoo's requirements.txt with the pin fixes of PIN_FIXES for ``series``."""
    lines = []
    for line in text.splitlines():
        for where, pattern, replacement in PIN_FIXES:
            if where in ("*", series) and re.search(pattern, line):
                line = re.sub(pattern, replacement, line)
        if line.strip():
            lines.append(line)
    return "\n".join(lines) + "\n"


def create_environment(series: str, tree: Path, python: Path, venv: Path, out) -> Path:
    shutil.rmtree(venv, ignore_errors=True)
    say(out, f"    creating Odoo's environment {venv} with {python}")
    subprocess.run([str(python), "-m", "venv", str(venv)], check=True)
    venv_python = venv / "bin" / "python"
    pip = [str(venv_python), "-m", "pip", "install", "--disable-pip-version-check"]
    _pip([*pip, "-q", "pip<24.1", "setuptools<70", "wheel"], "installer", out)
    for spec in BUILD_FIRST.get(series, []):
        _pip([*pip, "-q", *spec.split()], spec.split()[-1], out)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as requirements:
        requirements.write(fixed_requirements(series, (tree / "requirements.txt").read_text()))
    try:
        total = sum(1 for line in Path(requirements.name).read_text().splitlines() if not line.startswith("#"))
        _pip([*pip, "-r", requirements.name, *EXTRA_PACKAGES], "requirements", out, total=total + len(EXTRA_PACKAGES))
    finally:
        os.unlink(requirements.name)
    return venv_python


def _pip(cmd: List[str], label: str, out, total: int = 0) -> None:
    """pip with a progress bar: requirements seen so far out of those listed (their own dependencies extend
    it), elapsed time and what remains at the pace so far."""
    log = tempfile.TemporaryFile("w+")
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    bar = Progress(f"pip {label}", total, unit="packages", scale=1, out=out) if total else None
    assert proc.stdout is not None
    for line in proc.stdout:
        if bar and line.startswith("Collecting "):
            bar.advance(1, note=line.split()[1])
    if bar:
        bar.done()
    else:  # a step of one or two packages: its time is enough
        say(out, f"    pip {label}: done in {time.monotonic() - started:.0f} s")
    if proc.wait() != 0:
        log.seek(0)
        raise SetupError(f"pip failed ({' '.join(cmd[3:6])} ...):\n{log.read()[-3000:]}")


class Progress:
    """One line: what, how much of the total, speed and time left; redrawn in place on a terminal, every tenth
    otherwise (a log or CI stays short)."""

    def __init__(self, label: str, total: int, unit: str, scale: int, out, clock: Callable[[], float] = time.monotonic):
        self.label, self.total, self.unit, self.scale, self.out, self.clock = label, total, unit, scale, out, clock
        self.done_count, self.started, self.note = 0, clock(), ""
        self.tty = hasattr(out, "isatty") and out.isatty()
        self._last_draw, self._last_tenth = 0.0, -1

    def advance(self, amount: int, note: str = "") -> None:
        self.done_count += amount
        self.note = note or self.note
        now = self.clock()
        tenth = int(10 * self.done_count / self.total) if self.total else -1
        if (self.tty and now - self._last_draw >= 0.2) or (not self.tty and tenth > self._last_tenth):
            self._last_draw, self._last_tenth = now, tenth
            self._draw(end="\r" if self.tty else "\n")

    def done(self) -> None:
        if self.total:
            self.done_count = max(self.done_count, self.total)
        self._draw(end="\n")

    def line(self) -> str:
        elapsed = max(self.clock() - self.started, 1e-6)
        rate = self.done_count / elapsed
        amount = f"{self.done_count / self.scale:,.1f}" if self.scale > 1 else f"{self.done_count}"
        if self.total:
            fraction = min(self.done_count / self.total, 1.0)
            whole = f"{self.total / self.scale:,.1f}" if self.scale > 1 else f"{self.total}"
            left = (self.total - self.done_count) / rate if rate and self.done_count < self.total else 0.0
            bar = "#" * int(24 * fraction) + "." * (24 - int(24 * fraction))
            return (
                f"    {self.label:<17} [{bar}] {amount}/{whole} {self.unit}  {rate / self.scale:,.1f} {self.unit}/s  "
                f"{_clock(elapsed)} elapsed, {_clock(left)} left {self.note[:30]}"
            )
        return f"    {self.label:<17} {amount} {self.unit}  {rate / self.scale:,.1f} {self.unit}/s  {_clock(elapsed)}"

    def _draw(self, end: str) -> None:
        print(self.line().ljust(110 if self.tty else 0), end=end, file=self.out, flush=True)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


if __name__ == "__main__":  # python -m tools.odoo_setup 18.0: set a series up without the demo
    tree, python = ensure_odoo(sys.argv[1] if len(sys.argv) > 1 else "18.0")
    print(f"Odoo at {tree}, Python {python}")
