"""``python -m console``: serve the agent console with uvicorn.

Binds ``CONSOLE_INTERFACE:CONSOLE_PORT`` (default 127.0.0.1:8000); the store,
the Rasa server's address and the secrets come from the environment
(``crm_settings``). ``crm run`` starts it this way. A bad setting prints one
line and exits with code 2.
"""

from __future__ import annotations

import sys

from console.server import server_for
from crm_settings import SettingsError, get_settings
from crm_store.errors import InvalidInput


def main() -> int:
    """Start the console; return the exit code."""
    try:
        settings = get_settings()
        from console.app import create_app

        app = create_app(settings)
    except (SettingsError, InvalidInput) as error:
        print(f"console: {error}", file=sys.stderr)
        return 2
    server = server_for(
        app, host=settings.console_interface, port=settings.console_port
    )
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
