"""A broker that imports fine but fails to build: Rasa would silently drop it."""

from __future__ import annotations

from typing import Any

from rasa.core.brokers.broker import EventBroker


class LazyImportBroker(EventBroker):
    """Raises ImportError while being created, as a missing driver would."""

    @classmethod
    async def from_endpoint_config(cls, broker_config: Any, event_loop: Any = None):
        import crm_missing_driver  # noqa: F401

        return cls()

    def publish(self, event: dict[str, Any]) -> None:
        pass
