"""A newcomer's first run: Odoo downloaded over 127.0.0.1 from an archive made now from an Odoo tree on this
machine, verified, extracted outside the repository, its environment created; and the demo without Odoo."""

from __future__ import annotations

import hashlib
import http.server
import io
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools import demo_core, odoo_setup  # noqa: E402
from tools.odoo_tier import SERIES, find_odoo  # noqa: E402

# What the trimmed archive keeps of the real tree: enough to be recognised and to build its environment.
KEPT = ("odoo-bin", "odoo/release.py", "odoo/__init__.py")


def _find_real_tree():
    for series in ("18.0", *SERIES):
        found = find_odoo(series)
        if found:  # /opt/odoo, or what ./dev demo set up in the user's cache
            return series, found[0]
    return None


REAL_TREE = _find_real_tree()  # looked up before a test points the cache at a fresh folder


def _real_tree():
    if not REAL_TREE:
        pytest.skip("no Odoo tree on this machine to make the archive from (set one up at /opt/odoo/<series>)")
    return REAL_TREE


def make_archive(path: Path, tree: Path, top: str, requirements: str, release: bytes = b"") -> Path:
    """A .tar.gz shaped like Odoo's nightly ones (one top folder) from the files of ``tree``."""
    with tarfile.open(path, "w:gz") as tar:
        for name in KEPT:
            data = release if (release and name == "odoo/release.py") else (tree / name).read_bytes()
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
        data = requirements.encode()
        info = tarfile.TarInfo(f"{top}/requirements.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


class ArchiveServer:
    """Serves one folder on 127.0.0.1 and counts the GETs."""

    def __init__(self, folder: Path):
        self.gets = 0
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(folder), **kwargs)

            def do_GET(self):
                server.gets += 1
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def setup_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MAIL_GRAPH_ODOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MAIL_GRAPH_ODOO_SOURCE", raising=False)
    monkeypatch.delenv("MAIL_GRAPH_ODOO_SHA256", raising=False)
    return tmp_path


def test_download_verify_extract_environment_then_reuse(setup_env, monkeypatch):
    series, tree = _real_tree()
    # One small pure-Python requirement of the real file keeps pip quick; psycopg2 shows the pin fix.
    real = (tree / "requirements.txt").read_text().splitlines()
    requirements = "\n".join(line for line in real if line.startswith("polib=="))
    archive = make_archive(setup_env / f"odoo_{series}.test.tar.gz", tree, f"odoo-{series}.post0", requirements)
    server = ArchiveServer(setup_env)
    try:
        monkeypatch.setenv("MAIL_GRAPH_ODOO_SOURCE", f"{server.url}/{archive.name}")
        monkeypatch.setenv("MAIL_GRAPH_ODOO_SHA256", hashlib.sha256(archive.read_bytes()).hexdigest())
        out = io.StringIO()
        odoo_tree, python = odoo_setup.ensure_odoo(series, out=out)
        printed = out.getvalue()
        assert (odoo_tree / "odoo-bin").read_bytes() == (tree / "odoo-bin").read_bytes()
        assert str(odoo_tree).startswith(str(setup_env / "cache"))
        assert not str(odoo_tree).startswith(str(ROOT)), "never inside the repository"
        assert "download" in printed and "MB/s" in printed and "left" in printed, printed
        assert "verified" in printed and "pip requirements" in printed, printed
        done = subprocess.run([str(python), "-c", "import polib, websocket"], capture_output=True)  # noqa: S603
        assert done.returncode == 0, done.stderr
        assert server.gets == 1
        # A second run reuses it: no download, same place; the tier finds it too.
        assert odoo_setup.ensure_odoo(series, out=io.StringIO()) == (odoo_tree, python)
        assert server.gets == 1
        monkeypatch.setenv("ODOO_ROOT", str(setup_env / "no-odoo-here"))
        assert find_odoo(series) == (odoo_tree, python)
    finally:
        server.stop()


def test_refuses_what_is_not_a_whole_archive_of_the_series(setup_env, monkeypatch):
    series, tree = _real_tree()
    good = make_archive(setup_env / "good.tar.gz", tree, "odoo", "")
    truncated = setup_env / "truncated.tar.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(odoo_setup.SetupError, match="not a whole tar archive"):
        odoo_setup.verify(truncated, series)
    other = "14.0" if series != "14.0" else "15.0"
    with pytest.raises(odoo_setup.SetupError, match=f"holds Odoo {series}, not {other}"):
        odoo_setup.verify(good, other)
    monkeypatch.setenv("MAIL_GRAPH_ODOO_SHA256", "0" * 64)
    with pytest.raises(odoo_setup.SetupError, match="not the expected"):
        odoo_setup.verify(good, series)


def test_extraction_stays_inside_the_tree(setup_env):
    archive = setup_env / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("odoo/odoo-bin", "odoo/../../escaped.txt"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    tree = odoo_setup.extract(archive, setup_env / "tree", io.StringIO())
    assert (tree / "odoo-bin").is_file()
    assert not (setup_env.parent / "escaped.txt").exists() and not (setup_env / "escaped.txt").exists()


def test_unreachable_source_means_unavailable(setup_env, monkeypatch):
    monkeypatch.setenv("MAIL_GRAPH_ODOO_SOURCE", "http://127.0.0.1:9/odoo_18.0.tar.gz")
    with pytest.raises(odoo_setup.OdooUnavailable, match="could not be downloaded"):
        odoo_setup.fetch("http://127.0.0.1:9/odoo_18.0.tar.gz", setup_env / "downloads", io.StringIO())
    with pytest.raises(odoo_setup.OdooUnavailable, match="not a file"):
        odoo_setup.fetch(str(setup_env / "missing.tar.gz"), setup_env / "downloads", io.StringIO())


def test_a_missing_python_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "no-pyenv"))
    with pytest.raises(odoo_setup.PythonMissing, match=r"Odoo 14\.0 runs on Python 3\.8 .*pyenv install 3\.8"):
        odoo_setup.find_python("14.0")


def test_pin_fixes_of_each_series_requirements():
    samples = {
        "14.0": "psycopg2==2.8.5; sys_platform == 'win32' or python_version >= '3.8'\nrequests==2.21.0; python_version <= '3.9'\npython-ldap==3.1.0; sys_platform != 'win32'\n",
        "15.0": "cryptography==2.6.1  # old\npsycopg2==2.8.6; sys_platform == 'win32' or python_version >= '3.8'\n"
        "pyopenssl==19.0.0\nurllib3==1.26.5 # indirect\n",
        "18.0": "psycopg2==2.9.5 ; python_version == '3.11'\nlxml==5.2.1\n",
    }
    for series, text in samples.items():
        real = find_odoo(series)
        if real:  # the real file of the series, when this machine has it
            text = (real[0] / "requirements.txt").read_text()
        fixed = odoo_setup.fixed_requirements(series, text)
        assert "psycopg2==" not in fixed and "python-ldap" not in fixed
        assert "psycopg2-binary==" in fixed
    fixed14 = odoo_setup.fixed_requirements("14.0", samples["14.0"])
    assert "requests==2.25.1" in fixed14 and "psycopg2-binary==2.8.6" in fixed14
    fixed15 = odoo_setup.fixed_requirements("15.0", samples["15.0"])
    assert "cryptography==41.0.7" in fixed15 and "pyopenssl==23.2.0" in fixed15 and "urllib3==1.26.20" in fixed15


def test_progress_line_says_size_speed_and_time_left():
    now = [0.0]
    out = io.StringIO()
    bar = odoo_setup.Progress(
        "download", 100 * 1024 * 1024, unit="MB", scale=1024 * 1024, out=out, clock=lambda: now[0]
    )
    now[0] = 10.0
    bar.advance(25 * 1024 * 1024)
    assert "25.0/100.0 MB" in bar.line() and "2.5 MB/s" in bar.line() and "00:30 left" in bar.line()


def test_core_demo_without_odoo(capsys):
    assert demo_core.run() == 0
    printed = capsys.readouterr().out
    for label in ("plain text", "HTML + inline image", "CC and BCC", "10 MB attachment", "40 MB attachment",
                  "reply in a thread (In-Reply-To kept)"):  # fmt: skip
        row = next(line for line in printed.splitlines() if line.startswith(label))
        assert "  yes  " in row, row
    assert "bcc:erin@fabrikam.example" in printed and "Bcc hidden from what recipients get: yes" in printed
