"""Intents the system triggers (the hand-back) are not customer messages."""

from __future__ import annotations

from rasa.shared.core.events import UserUttered

from contact_history.events import is_recorded


def test_externally_triggered_intent_is_not_recorded() -> None:
    external = UserUttered.create_external("handed_back", []).as_dict()
    external["sender_id"] = "web:abc"
    assert not is_recorded(external)


def test_typed_messages_are_recorded_even_when_they_mention_external() -> None:
    typed = UserUttered("EXTERNAL: my parcel", {"name": "inform"}, message_id="m1")
    assert is_recorded(typed.as_dict())
    assert is_recorded(UserUttered("hello", {"name": "greet"}).as_dict())
