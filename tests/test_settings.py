"""The one settings object: validation, .env.example in step, no other env reads."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from crm_settings import (
    PROJECT_ROOT,
    Settings,
    SettingsError,
    env_names,
    get_settings,
    load_settings,
)
from tests.import_contracts import OURS

ENV_EXAMPLE = PROJECT_ROOT / ".env.example"
# Read by the Makefile and the tests, not by the application.
TOOL_VARIABLES = {"CRM_PYTHON", "CRM_TEST_PG_URL"}
OUR_PACKAGES = tuple(name for name in OURS if name != "crm_settings")
# Functions that copy the whole environment for a child process (file, function).
ENV_COPIERS = {
    ("runtime/processes.py", "process_env"),
    ("bot/training.py", "ensure_model"),
}


@pytest.fixture()
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No setting in the environment, so each test sets exactly what it tests."""
    for name in env_names():
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# --- .env.example ------------------------------------------------------------


def example_assignments() -> dict[str, str]:
    """``NAME=value`` lines of .env.example (commented or not)."""
    pattern = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$")
    found = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = pattern.match(line.strip())
        if match:
            found[match.group(1)] = match.group(2)
    return found


def test_every_setting_is_listed_in_env_example() -> None:
    listed = example_assignments()
    missing = sorted(set(env_names()) - set(listed))
    assert missing == [], f"add to .env.example: {missing}"


def test_env_example_names_no_variable_the_code_does_not_read() -> None:
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    named = set(re.findall(r"\b(?:CRM|RASA|ACTION)_[A-Z0-9_]+\b", text))
    unknown = sorted(named - set(env_names()) - TOOL_VARIABLES)
    assert unknown == [], f"not a Settings field: {unknown}"
    assert TOOL_VARIABLES <= set(example_assignments())


def test_env_example_values_are_valid_settings(clean_env: pytest.MonkeyPatch) -> None:
    for name, value in example_assignments().items():
        if name in env_names() and value:
            clean_env.setenv(name, value)
    settings = load_settings()
    assert settings.rasa_port == 5005
    assert settings.history_writer == "process"


# --- values and validation -----------------------------------------------------


def test_defaults_without_environment(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.database_url == f"sqlite:///{PROJECT_ROOT / 'var' / 'crm.db'}"
    assert (settings.rasa_port, settings.action_port) == (5005, 5055)
    assert settings.rasa_url == "http://127.0.0.1:5005"
    assert settings.identity_secret is None
    assert settings.turn_limit >= 2


def test_values_are_read_and_typed(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("RASA_PORT", "6123")
    clean_env.setenv("CRM_ECHO_SQL", "1")
    clean_env.setenv("CRM_TREATMENT_RULES", "/tmp/rules.yml")
    clean_env.setenv("CRM_MAX_CONCURRENT_TURNS", "0")
    clean_env.setenv("CRM_IDENTITY_SECRET", "k" * 32)
    settings = load_settings()
    assert settings.rasa_port == 6123
    assert settings.rasa_url == "http://127.0.0.1:6123"
    assert settings.echo_sql is True
    assert settings.treatment_rules == Path("/tmp/rules.yml")
    assert settings.turn_limit == 0
    assert settings.identity_secret.get_secret_value() == "k" * 32
    assert "k" * 32 not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RASA_PORT", "abc"),
        ("RASA_PORT", "70000"),
        ("ACTION_PORT", "0"),
        ("CRM_POLICY_CACHE_SIZE", "-1"),
        ("CRM_POLICY_CACHE_SIZE", "x"),
        ("CRM_MAX_CONCURRENT_TURNS", "-2"),
        ("CRM_HISTORY_WRITER", "disk"),
        ("CRM_ACTION_TIMEOUT", "0"),
        ("CRM_INACTIVITY_TIMEOUT_MINUTES", "soon"),
        ("CRM_ECHO_SQL", "maybe"),
        ("CRM_DATABASE_URL", "  "),
    ],
)
def test_bad_value_names_the_variable(
    clean_env: pytest.MonkeyPatch, name: str, value: str
) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(SettingsError, match=rf"\b{name}=") as caught:
        load_settings()
    assert isinstance(caught.value, ValueError)
    others = set(env_names()) - {name}
    assert not any(f"{other}=" in str(caught.value) for other in others)


def test_bad_secret_is_not_echoed(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("RASA_PORT", "abc")
    clean_env.setenv("CRM_IDENTITY_SECRET", "s3cret-value-not-for-logs-" + "x" * 8)
    message = str(pytest.raises(SettingsError, load_settings).value)
    assert "s3cret" not in message


def test_get_settings_reads_once_per_process(clean_env: pytest.MonkeyPatch) -> None:
    get_settings.cache_clear()
    try:
        clean_env.setenv("RASA_PORT", "6001")
        first = get_settings()
        clean_env.setenv("RASA_PORT", "6002")
        assert get_settings() is first and first.rasa_port == 6001
    finally:
        get_settings.cache_clear()


# --- nothing else reads the environment ----------------------------------------


def _functions(tree: ast.AST) -> dict[ast.AST, str]:
    """Map every node to the name of its innermost enclosing function ('' if none)."""
    owner: dict[ast.AST, str] = {}

    def visit(node: ast.AST, name: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = (
                child.name
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
                else name
            )
            owner[child] = inner
            visit(child, inner)

    visit(tree, "")
    return owner


def _read_key(node: ast.Attribute, parents: dict[ast.AST, ast.AST]) -> ast.AST | None:
    """The key of ``os.environ[KEY]``, ``os.environ.get(KEY)`` or ``os.getenv(KEY)``."""
    parent = parents.get(node)
    if isinstance(parent, ast.Subscript):
        return parent.slice
    call = None
    if node.attr == "getenv" and isinstance(parent, ast.Call):
        call = parent
    elif isinstance(parent, ast.Attribute) and parent.attr in ("get", "pop"):
        call = parents.get(parent)
    if isinstance(call, ast.Call) and call.args:
        return call.args[0]
    return None


def environment_uses(source: str, relative: str) -> list[str]:
    """``file:line: what`` for every environment access not allowed in ``relative``."""
    tree = ast.parse(source)
    owner = _functions(tree)
    parents = {
        child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)
    }
    problems = []
    for node in ast.walk(tree):
        what = None
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            bad = {a.name for a in node.names} & {"environ", "getenv", "environb"}
            what = f"from os import {', '.join(sorted(bad))}" if bad else None
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
            and node.attr in ("environ", "getenv", "environb")
        ):
            what = f"os.{node.attr}"
            if (relative, owner.get(node, "")) in ENV_COPIERS:
                # A child-process environment may copy os.environ, but never
                # read one of our settings from it.
                key = _read_key(node, parents)
                is_setting = isinstance(key, ast.Constant) and key.value in env_names()
                what = f"{what}[{key.value!r}]" if is_setting else None
        if what:
            problems.append(f"{relative}:{node.lineno}: {what}")
    return problems


def python_files() -> Iterator[Path]:
    for package in OUR_PACKAGES:
        yield from sorted((PROJECT_ROOT / package).rglob("*.py"))


def test_no_package_but_crm_settings_reads_the_environment() -> None:
    problems = []
    for path in python_files():
        relative = path.relative_to(PROJECT_ROOT).as_posix()
        problems += environment_uses(path.read_text(encoding="utf-8"), relative)
    assert problems == [], "read settings via crm_settings:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "source",
    [
        "import os\nPORT = os.environ.get('RASA_PORT')\n",
        "import os\nPORT = os.environ['RASA_PORT']\n",
        "import os\nPORT = os.getenv('RASA_PORT', '5005')\n",
        "from os import environ\n",
        "from os import getenv as g\n",
        "import os\ndef f():\n    return dict(os.environ)\n",
    ],
)
def test_the_scan_catches_environment_reads(source: str) -> None:
    assert environment_uses(source, "bot/x.py")


def test_env_copiers_may_copy_but_not_read_settings() -> None:
    copy = (
        "import os\ndef ensure_model():\n"
        "    path = os.environ.get('PYTHONPATH')\n"
        "    return {**os.environ, 'RASA_TELEMETRY_ENABLED': 'false'}\n"
    )
    assert environment_uses(copy, "bot/training.py") == []
    assert environment_uses(copy, "bot/server.py") != []
    read = "import os\ndef ensure_model():\n    return os.environ.get('RASA_PORT')\n"
    assert environment_uses(read, "bot/training.py") == [
        "bot/training.py:3: os.environ['RASA_PORT']"
    ]


# --- entry points stop on a bad setting ------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"), [("RASA_PORT", "abc"), ("CRM_POLICY_CACHE_SIZE", "x")]
)
def test_crm_exits_2_naming_the_bad_variable(
    tmp_path: Path, name: str, value: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in env_names()}
    env[name] = value
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "db", "upgrade", "--database-url", url],
        capture_output=True,
        text=True,
        env={**env, "COLUMNS": "200"},
        cwd=PROJECT_ROOT,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: ")
    assert f"{name}={value!r}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "crm.db").exists()  # stopped before touching the store
    helped = subprocess.run(
        [sys.executable, "-m", "cli.main", "db", "upgrade", "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
        timeout=120,
    )
    assert helped.returncode == 0 and "Usage" in helped.stdout  # help needs none


def test_rasa_server_exits_2_naming_the_bad_variable(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.server import main

    clean_env.setenv("CRM_ACTION_TIMEOUT", "-1")
    get_settings.cache_clear()
    try:
        assert main(["--model", "missing.tar.gz"]) == 2
    finally:
        get_settings.cache_clear()
    assert "CRM_ACTION_TIMEOUT='-1'" in capsys.readouterr().err


def test_rasa_server_defaults_come_from_settings() -> None:
    from bot.server import parse_args

    settings = Settings(rasa_port=6111, rasa_interface="127.0.0.1", action_timeout=2.5)
    args = parse_args(["--model", "m.tar.gz"], settings)
    assert (args.port, args.interface, args.action_timeout) == (6111, "127.0.0.1", 2.5)
    args = parse_args(["--model", "m.tar.gz", "--port", "7000"], settings)
    assert args.port == 7000


@pytest.mark.parametrize("name", ["CRM_IDENTITY_SECRET", "CRM_ACTION_TOKEN"])
def test_short_secrets_are_refused_without_echo(
    clean_env: pytest.MonkeyPatch, name: str
) -> None:
    clean_env.setenv(name, "tooshort-abc")
    message = str(pytest.raises(SettingsError, load_settings).value)
    assert name in message and "32 bytes" in message
    assert "tooshort" not in message
