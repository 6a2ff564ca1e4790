"""Fixed paths of the store package (no environment reads).

Runtime settings (database URL, SQL echo, analytics file paths) live in
``crm_settings``; callers read them there and pass them to ``crm_store``
functions as arguments. ``crm_store`` itself never reads the environment.
"""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
