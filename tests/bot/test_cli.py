"""The ``crm`` command line, run as a real subprocess against a real SQLite file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DEMO_DIR, ROOT

CRM = [sys.executable, "-m", "cli.main"]


def crm(*args: str, url: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("CRM_DATABASE_URL", None)
    if url:
        env["CRM_DATABASE_URL"] = url
    return subprocess.run(
        [*CRM, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )


@pytest.fixture(scope="module")
def seeded_url(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('cli') / 'crm.db'}"
    result = crm("seed", str(DEMO_DIR), "--no-shift", url=url)
    assert result.returncode == 0, result.stderr
    assert "customers" in result.stdout and "2000" in result.stdout
    return url


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["db"],
        ["customer"],
        ["bench"],
        ["seed"],
        ["customer", "show"],
        ["customer", "timeline"],
        ["outbox", "list"],
        ["report", "export"],
        ["bench", "reports"],
    ],
)
def test_help_everywhere(command):
    result = crm(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_db_upgrade_is_repeatable(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    for _ in range(2):
        result = crm("db", "upgrade", url=url)
        assert result.returncode == 0, result.stderr
        assert "up to date" in result.stdout


def test_seed_twice_reports_everything_already_there(seeded_url):
    result = crm("seed", str(DEMO_DIR), "--no-shift", url=seeded_url)
    assert result.returncode == 0, result.stderr
    assert "│ orders             │ 0        │ 8008" in result.stdout


def test_customer_show_and_timeline(seeded_url):
    shown = crm("customer", "show", "C0002", url=seeded_url)
    assert shown.returncode == 0, shown.stderr
    assert "Pavel Okafor" in shown.stdout and "6 orders" in shown.stdout
    assert "A10006" in shown.stdout  # newest of the five recent orders
    timeline = crm("customer", "timeline", "C0703", url=seeded_url)
    assert timeline.returncode == 0, timeline.stderr
    assert "complaint" in timeline.stdout


def test_unknown_customer_and_bad_cursor_are_clear_errors(seeded_url):
    missing = crm("customer", "show", "C9999", url=seeded_url)
    assert missing.returncode == 1 and "no customer C9999" in missing.stderr
    assert "Traceback" not in missing.stderr
    bad = crm("customer", "timeline", "C0001", "--cursor", "junk", url=seeded_url)
    assert bad.returncode == 1 and "malformed cursor" in bad.stderr


def test_bad_fixture_is_rejected_with_file_and_line(tmp_path):
    target = tmp_path / "demo"
    shutil.copytree(DEMO_DIR, target)
    orders = target / "orders.csv"
    lines = orders.read_text().splitlines()
    lines[3] = lines[3].replace("C", "X", 1)  # unknown customer on file line 4
    orders.write_text("\n".join(lines) + "\n")
    url = f"sqlite:///{tmp_path / 'bad.db'}"
    result = crm("seed", str(target), url=url)
    assert result.returncode == 1
    assert f"{orders}:4: unknown customer_id" in result.stderr
    assert "nothing was loaded" in result.stderr
    shown = crm("customer", "show", "C0001", url=url)
    assert shown.returncode == 1  # nothing at all was written


def test_bad_as_of_is_a_clear_error(tmp_path):
    result = crm(
        "seed",
        str(DEMO_DIR),
        "--as-of",
        "yesterday",
        url=f"sqlite:///{tmp_path / 'y.db'}",
    )
    assert result.returncode == 2 and "not a date-time" in result.stderr


def test_fixture_copy_is_verbatim():
    shared = ROOT.parent / "shared" / "fixtures" / "demo-retail"
    if not shared.is_dir():  # the repo must run without ../shared
        assert (DEMO_DIR / "customers.csv").is_file()
        return
    for path in shared.iterdir():
        assert (DEMO_DIR / path.name).read_bytes() == path.read_bytes(), path.name


def test_module_entry_point_runs():
    result = subprocess.run(
        [sys.executable, "-m", "cli", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "seed" in result.stdout


def test_outbox_list_masks_recipients_and_shows_bodies_on_request(seeded_url):
    from crm_store.db import session_factory
    from crm_store.services.notifier import Notifier

    with session_factory(seeded_url).begin() as session:
        for n in (1, 2):
            Notifier().notify(
                session,
                customer_id="C0001",
                channel="email",
                recipient=f"outbox.test{n}@example.org",
                purpose="contact_change_code",
                subject=f"Code {n}",
                body=f"Your code is 00000{n}.",
            )
    listed = crm("outbox", "list", "--status", "pending", url=seeded_url)
    assert listed.returncode == 0, listed.stderr
    assert "o***@example.org" in listed.stdout and "Code 2" in listed.stdout
    assert "outbox.test" not in listed.stdout and "000002" not in listed.stdout
    newest = crm("outbox", "list", "--limit", "1", "--show-body", url=seeded_url)
    assert newest.returncode == 0, newest.stderr
    assert "Your code is 000002." in newest.stdout
    assert "Code 1" not in newest.stdout
    bad = crm("outbox", "list", "--status", "lost", url=seeded_url)
    assert bad.returncode == 2 and "status must be one of" in bad.stderr
    assert crm("outbox", "list", "--status", "sent", url=seeded_url).returncode == 0


def test_installed_crm_runs_outside_the_checkout(tmp_path: Path) -> None:
    """The console script and every shipped package import from anywhere.

    Catches a package missing from pyproject's ``include`` list, or an editable
    install made before a package existed (``make run`` would fail).
    """
    from tests.import_contracts import OURS

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    shipped = [name for name in OURS if name != "bench"]
    result = subprocess.run(
        [sys.executable, "-c", "import " + ", ".join(shipped)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    script = Path(sys.executable).parent / "crm"
    result = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert result.returncode == 0, result.stderr
    assert "outbox" in result.stdout
