"""The import contracts hold on this tree, and the check catches violations."""

from __future__ import annotations

from pathlib import Path

from tests.import_contracts import ROOT, all_imports, check


def write_tree(root: Path, files: dict[str, str]) -> Path:
    """Create ``files`` (relative path -> source) under ``root``, with packages."""
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(root).parents:
            init = root / parent / "__init__.py"
            if parent != Path(".") and not init.exists():
                init.write_text("")
        path.write_text(source)
    return root


CLEAN = {
    "crm_store/models.py": "import sqlalchemy\n",
    "crm_store/services/orders.py": (
        "from crm_store.models import Order\nfrom .. import models\n"
    ),
    "crm_settings/__init__.py": "import os\nimport pydantic\n",
    "actions/orders.py": (
        "from rasa_sdk import Action\n"
        "from crm_store.services.orders import get_order\n"
        "from channels.names import channel_name\n"
        "from crm_settings import get_settings\n"
        "from .common import helper\n"
    ),
    "actions/common.py": "import sqlalchemy\n",
    "channels/names.py": "from crm_settings import get_settings\n",
    "contact_history/writer.py": "from crm_store.services import history\n",
    "bot/server.py": "import rasa\nfrom contact_history.writer import Writer\n",
    "cli/main.py": (
        "from bench.store import run\nfrom crm_store.services import orders\n"
        "from bot.server import serve\n"
    ),
    "bench/store.py": "from crm_store.models import Customer\n",
    "runtime/supervisor.py": "def start():\n    from bot.training import train\n",
    "console/__init__.py": "from crm_store.services import orders\n",
}


def test_clean_tree_reports_nothing(tmp_path: Path) -> None:
    root = write_tree(tmp_path, CLEAN)
    assert check(root) == []


def test_crm_store_importing_rasa_or_ours_is_reported(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path,
        {
            **CLEAN,
            "crm_store/x.py": "import rasa.core\nfrom bot import y\n",
            "crm_store/y.py": "from rasa_sdk import Tracker\n",
        },
    )
    rule = "crm_store imports nothing of ours outside crm_store and never Rasa"
    assert check(root) == [
        f"crm_store/x.py:1: crm_store.x imports rasa.core ({rule})",
        f"crm_store/x.py:2: crm_store.x imports bot ({rule})",
        f"crm_store/y.py:1: crm_store.y imports rasa_sdk ({rule})",
    ]


def test_imports_inside_functions_and_relative_imports_count(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path,
        {
            **CLEAN,
            "actions/bad.py": "def run():\n    from bot.broker import Broker\n",
            "channels/sms/__init__.py": "from ...actions import orders\n",
            "bot/patches/x.py": "from ...cli import main\n",
        },
    )
    assert check(root) == [
        "actions/bad.py:2: actions.bad imports bot.broker (actions import only"
        " crm_store, channels, crm_settings and rasa_sdk)",
        "bot/patches/x.py:1: bot.patches.x imports cli (bot never imports actions"
        " or cli)",
        "channels/sms/__init__.py:1: channels.sms imports actions (channels never"
        " import actions, bot or cli)",
    ]


def test_rasa_server_is_forbidden_to_actions_but_rasa_sdk_is_not(
    tmp_path: Path,
) -> None:
    root = write_tree(
        tmp_path, {**CLEAN, "actions/x.py": "import rasa_sdk\nimport rasa.shared\n"}
    )
    assert check(root) == [
        "actions/x.py:2: actions.x imports rasa.shared (actions import only"
        " crm_store, channels, crm_settings and rasa_sdk)"
    ]


def test_models_only_through_services_and_bench_only_from_cli(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path,
        {
            **CLEAN,
            "contact_history/writer.py": "from crm_store import models\n",
            "runtime/processes.py": (
                "import importlib\nimportlib.import_module('bench.latency')\n"
            ),
            "crm_settings/__init__.py": "from crm_store.db import engine_for\n",
        },
    )
    assert check(root) == [
        "contact_history/writer.py:1: contact_history.writer imports"
        " crm_store.models (outside crm_store only tests and bench use"
        " crm_store.models; the rest go through crm_store services)",
        "crm_settings/__init__.py:1: crm_settings imports crm_store.db"
        " (crm_settings imports nothing of ours)",
        "runtime/processes.py:2: runtime.processes imports bench.latency"
        " (only cli imports bench)",
    ]


def test_console_and_contact_history_rules(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path,
        {
            **CLEAN,
            "console/app.py": "import bot.server\nimport actions\n",
            "contact_history/x.py": "from rasa.core.brokers import EventBroker\n",
        },
    )
    assert [line.split(" (")[0] for line in check(root)] == [
        "console/app.py:1: console.app imports bot.server",
        "console/app.py:2: console.app imports actions",
        "contact_history/x.py:1: contact_history.x imports rasa.core.brokers",
    ]


def test_the_check_sees_the_real_imports() -> None:
    edges = {
        (found.importer.split(".")[0], found.imported.split(".")[0])
        for found in all_imports(ROOT)
    }
    assert {("actions", "crm_store"), ("actions", "rasa_sdk"), ("cli", "bench")} <= (
        edges
    )


def test_this_tree_keeps_the_contracts() -> None:
    violations = check(ROOT)
    assert violations == [], "\n".join(violations)
