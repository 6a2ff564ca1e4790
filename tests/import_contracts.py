"""Import contracts: which of our packages may import what, checked with ``ast``.

Every ``import``/``from ... import`` in our packages is collected, including
relative imports, imports inside functions or ``TYPE_CHECKING`` blocks and
``importlib.import_module("literal")`` calls, and checked against ``CONTRACTS``.
``tests/test_import_contracts.py`` runs the check in ``make test``; run it by hand
with ``.venv/bin/python -m tests.import_contracts``.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

OURS = (
    "actions",
    "bench",
    "bot",
    "channels",
    "cli",
    "console",
    "contact_history",
    "crm_settings",
    "crm_store",
    "runtime",
)


@dataclass(frozen=True)
class Contract:
    """A rule: modules under ``sources`` must not import anything in ``forbidden``.

    A forbidden entry ``rasa`` matches ``rasa`` and ``rasa.core.x`` but not
    ``rasa_sdk``. ``except_from`` lists importers (packages) the rule spares.
    """

    name: str
    sources: tuple[str, ...]
    forbidden: tuple[str, ...]
    except_from: tuple[str, ...] = ()


def _others(*allowed: str) -> tuple[str, ...]:
    return tuple(package for package in OURS if package not in allowed)


CONTRACTS = (
    Contract(
        "crm_store imports nothing of ours outside crm_store and never Rasa",
        ("crm_store",),
        (*_others("crm_store"), "rasa", "rasa_sdk"),
    ),
    Contract(
        "crm_settings imports nothing of ours",
        ("crm_settings",),
        _others("crm_settings"),
    ),
    Contract(
        "actions import only crm_store, channels, crm_settings and rasa_sdk",
        ("actions",),
        (*_others("actions", "crm_store", "channels", "crm_settings"), "rasa"),
    ),
    Contract(
        "only cli imports bench",
        _others("cli", "bench"),
        ("bench",),
    ),
    Contract(
        "channels never import actions, bot or cli",
        ("channels",),
        ("actions", "bot", "cli"),
    ),
    Contract(
        "contact_history never imports rasa, bot, actions or cli",
        ("contact_history",),
        ("rasa", "bot", "actions", "cli"),
    ),
    Contract(
        "bot never imports actions or cli",
        ("bot",),
        ("actions", "cli"),
    ),
    Contract(
        "console never imports bot or actions",
        ("console",),
        ("bot", "actions"),
    ),
    # bench/store.py times bare Core statements on the tables as the baseline the
    # services are compared with, so it needs the tables, as tests do.
    Contract(
        "outside crm_store only tests and bench use crm_store.models; "
        "the rest go through crm_store services",
        _others("crm_store"),
        ("crm_store.models",),
        except_from=("bench",),
    ),
)


@dataclass(frozen=True, order=True)
class Import:
    """One imported module name, where it is imported and by which module."""

    path: str
    line: int
    importer: str
    imported: str


@dataclass(frozen=True, order=True)
class Violation:
    """An import that breaks a contract."""

    path: str
    line: int
    importer: str
    imported: str
    contract: str

    def __str__(self) -> str:
        """Return ``path:line: importer imports imported (contract)``."""
        return (
            f"{self.path}:{self.line}: {self.importer} imports {self.imported}"
            f" ({self.contract})"
        )


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def module_name(root: Path, path: Path) -> str:
    """Return the dotted module name of ``path`` (a file under ``root``)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
    return ".".join([*base, *([node.module] if node.module else [])])


def _names(module: str, is_package: bool, node: ast.AST) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        base = _resolve(module, is_package, node)
        yield base
        # ``from pkg import sub`` may import the submodule ``pkg.sub``.
        yield from (f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    elif isinstance(node, ast.Call):
        func = node.func
        called = (
            func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        )
        first = node.args[0] if node.args else None
        if called in ("import_module", "__import__") and isinstance(
            first, ast.Constant
        ):
            if isinstance(first.value, str) and not first.value.startswith("."):
                yield first.value


def imports_in(root: Path, path: Path) -> list[Import]:
    """Return every module name imported by the file ``path`` under ``root``."""
    module = module_name(root, path)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    relative = path.relative_to(root).as_posix()
    found = {
        Import(relative, node.lineno, module, name)
        for node in ast.walk(tree)
        for name in _names(module, is_package, node)
        if name
    }
    return sorted(found)


def source_files(root: Path) -> Iterator[Path]:
    """Yield the Python files of our packages under ``root``."""
    for package in OURS:
        directory = root / package
        if directory.is_dir():
            yield from sorted(directory.rglob("*.py"))


def all_imports(root: Path) -> list[Import]:
    """Return the imports of every file in our packages under ``root``."""
    return [found for path in source_files(root) for found in imports_in(root, path)]


def check(root: Path = ROOT, contracts: tuple[Contract, ...] = CONTRACTS) -> list[str]:
    """Return one line per import under ``root`` that breaks a contract.

    Importing from one's own package is always allowed.
    """
    # ``from a.b import c`` is seen as ``a.b`` and ``a.b.c``: report it once.
    violations: dict[tuple[str, int, str, str], Violation] = {}
    for found in all_imports(root):
        own = found.importer.split(".")[0]
        for contract in contracts:
            if not any(_within(found.importer, s) for s in contract.sources):
                continue
            if any(_within(found.importer, e) for e in contract.except_from):
                continue
            for target in contract.forbidden:
                if _within(found.imported, target) and not _within(target, own):
                    key = (found.path, found.line, contract.name, target)
                    violations.setdefault(
                        key,
                        Violation(
                            found.path,
                            found.line,
                            found.importer,
                            found.imported,
                            contract.name,
                        ),
                    )
    return [str(violation) for violation in sorted(violations.values())]


def main() -> int:
    """Print the violations in this tree; exit status 1 when there are any."""
    violations = check()
    print("\n".join(violations) or "import contracts: OK")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
