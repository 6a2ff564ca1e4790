"""Rasa input channel names -> contact-history channels (shared by broker and actions).

Kept free of Rasa imports so the action server can use it cheaply.
"""

from __future__ import annotations

CHANNEL_BY_INPUT = {
    "rest": "chat",
    "callback": "chat",
    "socketio": "chat",
    "web": "chat",  # the console's web chat page (channels.webchat)
    "telegram": "telegram",
    "twilio_sms": "sms",
    "twilio": "sms",
    "twilio_voice": "voice",
    "email": "email",
}
DEFAULT_CHANNEL = "chat"


def channel_for(input_channel: str | None) -> str:
    """Map a Rasa input channel name to a store channel (unknown -> chat)."""
    return CHANNEL_BY_INPUT.get((input_channel or "").lower(), DEFAULT_CHANNEL)
