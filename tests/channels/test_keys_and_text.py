"""Tracker keys and the cleaning of untrusted text and metadata."""

from __future__ import annotations

from typing import Any

import pytest

from channels.keys import (
    InvalidSenderId,
    check_raw_id,
    rest_sender,
    split_tracker_key,
    tracker_key,
)
from channels.text import (
    clean_text,
    clean_value,
    depth_exceeds,
    json_size,
    limited_metadata,
)


@pytest.mark.parametrize(
    ("channel", "raw", "key"),
    [
        ("rest", "abc", "rest:abc"),
        ("rest", "telegram:123", "rest:telegram:123"),
        ("telegram", "123456", "telegram:123456"),
        ("sms", "+3197010000001", "sms:+3197010000001"),
        ("voice", "+3197010000001", "voice:+3197010000001"),
        ("email", "a@b.nl", "email:a@b.nl"),
        ("web", "s-1", "web:s-1"),
    ],
)
def test_tracker_keys_are_namespaced(channel: str, raw: str, key: str) -> None:
    assert tracker_key(channel, raw) == key
    assert split_tracker_key(key) == (channel, raw)


@pytest.mark.parametrize("raw", ["", None, 5, "a\nb", "a\x00", "\ud800", "x" * 249])
def test_bad_raw_ids_are_refused(raw: Any) -> None:
    with pytest.raises(InvalidSenderId):
        tracker_key("rest", raw)


def test_unknown_channels_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown channel"):
        tracker_key("fax", "123")


def test_check_raw_id_takes_a_tighter_limit() -> None:
    assert check_raw_id("x" * 128, max_length=128) == "x" * 128
    with pytest.raises(InvalidSenderId, match="128"):
        check_raw_id("x" * 129, max_length=128)


@pytest.mark.parametrize("key", ["alice", "fax:1", "rest:", ":x", ""])
def test_non_keys_do_not_split(key: str) -> None:
    assert split_tracker_key(key) is None


def test_rest_sender_only_for_rest_keys() -> None:
    assert rest_sender("rest:alice") == "alice"
    assert rest_sender("rest:sms:+31") == "sms:+31"
    assert rest_sender("sms:+31") is None
    assert rest_sender("alice") is None


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("plain text", "plain text"),
        ("a\x00b", "ab"),
        ("tab\there\nnew line", "tab\there\nnew line"),
        ("\x01\x07\x08\x0b\x0c\r\x1b\x1f", ""),
        ("lone \ud800 high", "lone \ufffd high"),
        ("lone \udfff low", "lone \ufffd low"),
        ("emoji \U0001f600 ok", "emoji \U0001f600 ok"),
        ("del \x7f and é", "del \x7f and é"),
    ],
)
def test_clean_text(raw: str, clean: str) -> None:
    assert clean_text(raw) == clean
    clean_text(raw).encode("utf-8")  # always encodable


def test_clean_value_cleans_keys_and_nested_strings() -> None:
    value = {"k\x00": ["a\ud800", {"b": "c\x00"}, 1, None, True]}
    assert clean_value(value) == {"k": ["a\ufffd", {"b": "c"}, 1, None, True]}


def test_depth_is_measured_without_recursion() -> None:
    deep: Any = 1
    for _ in range(100_000):
        deep = [deep]
    assert depth_exceeds(deep, 5)
    assert not depth_exceeds({"a": {"b": [1]}}, 3)
    assert depth_exceeds({"a": {"b": [1]}}, 2)
    assert not depth_exceeds("text", 0)


def test_json_size_counts_utf8_bytes_and_refuses_the_unserialisable() -> None:
    assert json_size({"a": "é"}) == len('{"a":"é"}'.encode())
    assert json_size({"a": {1, 2}}) is None


def test_limited_metadata() -> None:
    identity = {"kind": "email", "value": "a\x00@b.nl"}
    kept = limited_metadata({"identity": identity, "other": 1}, max_bytes=2048)
    assert kept == {"identity": {"kind": "email", "value": "a@b.nl"}}
    assert limited_metadata({"other": 1}, max_bytes=2048) == {}
    assert limited_metadata({"identity": identity}, max_bytes=10) == {}
    assert limited_metadata(None, max_bytes=2048) == {}
    five_levels = {"identity": {"a": {"b": {"c": {}}}}}
    assert limited_metadata(five_levels, max_bytes=999) == five_levels
    six_levels = {"identity": {"a": {"b": {"c": {"d": {}}}}}}
    assert limited_metadata(six_levels, max_bytes=999) == {}
