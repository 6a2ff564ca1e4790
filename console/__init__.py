"""The agent and manager console (FastAPI): queue, conversations, customer 360.

``console.app.create_app`` builds it; ``python -m console`` serves it. Pages are
server-rendered (``console.pages``), the JSON API is under ``/api``
(``console.api``), live updates are server-sent events (``console.events``) and
the customer web chat lives at ``/chat`` (``console.chat``). It may import
crm_store services, channels and crm_settings, never bot/, actions/ or
``crm_store.models``.
"""
