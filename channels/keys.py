"""Tracker keys: every conversation's Rasa sender id is namespaced by its channel.

A channel connector never hands a client-supplied id to Rasa as is: it passes
``tracker_key(channel, raw_id)``, so no channel can address another channel's
conversation (a REST sender called ``sms:+3197010000001`` gets the tracker
``rest:sms:+3197010000001``, never the SMS conversation of that phone).

| channel    | key                    | raw id                                  |
|------------|------------------------|-----------------------------------------|
| REST       | ``rest:<sender>``      | the ``sender`` of the webhook body      |
| Telegram   | ``telegram:<user id>`` | the numeric Telegram user id            |
| SMS        | ``sms:+31…``           | the caller's number in E.164 form       |
| voice      | ``voice:+31…``         | the caller's number in E.164 form       |
| e-mail     | ``email:<address>#<t>``| sender address + thread (one per thread) |
| web chat   | ``web:<session>``      | the console's web-chat session id       |

The contact history keeps the key in ``conversations.tracker_key``; its
conversation ids are issued by the store (``crm_store.services.history``).
"""

from __future__ import annotations

CHANNEL_KEYS = ("rest", "telegram", "sms", "voice", "email", "web")
SEPARATOR = ":"
MAX_RAW_ID = 248  # "telegram:" + 248 < 255 (the tracker_key column, Rasa's SQL store)


class InvalidSenderId(ValueError):
    """A raw sender id that cannot become a tracker key."""


def check_raw_id(raw_id: object, *, max_length: int = MAX_RAW_ID) -> str:
    """Return ``raw_id`` if it is a non-empty printable string of ``max_length``.

    Raises:
        InvalidSenderId: not a string, empty, too long or not printable.
    """
    if not isinstance(raw_id, str) or not raw_id:
        raise InvalidSenderId("the sender id must be a non-empty string")
    if len(raw_id) > max_length:
        raise InvalidSenderId(f"the sender id is longer than {max_length} characters")
    if not raw_id.isprintable():
        raise InvalidSenderId("the sender id must be printable text")
    try:
        raw_id.encode("utf-8")
    except UnicodeEncodeError as error:  # lone surrogates are "printable"
        raise InvalidSenderId("the sender id must be valid Unicode") from error
    return raw_id


def tracker_key(channel: str, raw_id: str) -> str:
    """Return the tracker key ``<channel>:<raw id>`` (see the module docstring).

    Raises:
        ValueError: unknown channel; InvalidSenderId: a bad raw id.
    """
    if channel not in CHANNEL_KEYS:
        raise ValueError(f"unknown channel {channel!r}; one of {CHANNEL_KEYS}")
    return f"{channel}{SEPARATOR}{check_raw_id(raw_id)}"


def split_tracker_key(key: str) -> tuple[str, str] | None:
    """Return ``(channel, raw id)`` of a namespaced key, None for any other string."""
    channel, separator, raw_id = (key or "").partition(SEPARATOR)
    if not separator or channel not in CHANNEL_KEYS or not raw_id:
        return None
    return channel, raw_id


# The channel identity kind behind each key's raw id (``channel_identity``).
IDENTITY_KIND = {
    "telegram": "telegram",
    "email": "email",
    "sms": "phone",
    "voice": "phone",
}
THREAD_SEPARATOR = "#"  # e-mail raw ids: "<address>#<thread id>"


def channel_identity(key: str) -> tuple[str, str] | None:
    """``(identity kind, value)`` the channel vouches for in a tracker key, else None.

    ``telegram:<user id>`` -> ``("telegram", user id)``; ``email:<address>#<thread>``
    -> ``("email", address)``; ``sms:``/``voice:`` -> ``("phone", number)``. REST and
    web chat keys carry no identity (their ids are chosen by the client).
    """
    parts = split_tracker_key(key)
    if parts is None or parts[0] not in IDENTITY_KIND:
        return None
    channel, raw_id = parts
    if raw_id.startswith("withheld:"):  # a caller without caller id (voice)
        return None
    if channel == "email":
        address, separator, thread = raw_id.rpartition(THREAD_SEPARATOR)
        raw_id = address if separator and address and thread else raw_id
    return IDENTITY_KIND[channel], raw_id


def rest_sender(key: str) -> str | None:
    """The REST client's own sender id of a ``rest:`` key, else None.

    Signed identity assertions arrive on the REST webhook and are signed for the
    sender id the client uses; they count only on that sender's REST tracker.
    """
    parts = split_tracker_key(key)
    if parts is None or parts[0] != "rest":
        return None
    return parts[1]
