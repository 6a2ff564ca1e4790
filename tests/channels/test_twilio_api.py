"""The Twilio REST sender against the local fake Twilio API (a real HTTP server).

The twilio SDK and requests are the real ones; only Twilio is faked.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from channels.twilio_api import MAX_SMS_CHARS, SmsFailed, TwilioSender, split_sms
from runtime.processes import free_port
from tests.fakes.twilio_api import FakeTwilioApi

FROM = "+3197010000000"
TO = "+31612340001"


@pytest.fixture()
def api() -> Iterator[FakeTwilioApi]:
    with FakeTwilioApi() as fake:
        yield fake


def sender_for(api: FakeTwilioApi, **options: float) -> TwilioSender:
    settings = {"max_attempts": 3, "base_delay": 0.01, "max_delay": 2.0, **options}
    return TwilioSender(
        api.account_sid,
        api.auth_token,
        FROM,
        api.url,
        **settings,  # type: ignore[arg-type]
    )


# --- splitting (no network) ---------------------------------------------------------


def test_short_and_blank_texts() -> None:
    assert split_sms("  hello  ") == ["hello"]
    assert split_sms(" \n\n ") == []
    assert split_sms("") == []


def test_a_3500_character_answer_is_three_parts_at_paragraphs() -> None:
    paragraph = ("Your parcel is on its way to you. " * 20).strip()  # 679 chars
    text = "\n\n".join([paragraph] * 5)  # 3,403 characters
    parts = split_sms(text)
    assert len(parts) == 3
    assert all(len(p) <= MAX_SMS_CHARS for p in parts)
    assert "\n\n".join(parts) == text


def test_split_prefers_line_then_word_and_cuts_hard_without_spaces() -> None:
    lines = "a" * 1000 + "\n" + "b" * 1000
    assert split_sms(lines) == ["a" * 1000, "b" * 1000]
    words = " ".join(["word"] * 700)  # 3,499 characters, no line breaks
    parts = split_sms(words)
    assert all(p.startswith("word") and p.endswith("word") for p in parts)
    assert " ".join(parts) == words
    assert [len(p) for p in split_sms("x" * 3500)] == [1600, 1600, 300]


def test_emoji_count_twice_against_the_limit() -> None:
    parts = split_sms("\U0001f600" * 1000)
    assert [len(p) for p in parts] == [800, 200]


def test_more_than_five_parts_are_cut_with_an_ellipsis() -> None:
    text = " ".join(["word"] * 3000)  # 14,999 characters
    parts = split_sms(text)
    assert len(parts) == 5
    assert parts[-1].endswith("word...")
    assert all(len(p) <= MAX_SMS_CHARS for p in parts)
    assert split_sms("x" * 20000, max_parts=1) == ["x" * 1597 + "..."]


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        split_sms("text", limit=5)
    with pytest.raises(ValueError):
        split_sms("text", max_parts=0)


# --- sending ------------------------------------------------------------------------


def test_a_message_is_created_and_its_sid_returned(api: FakeTwilioApi) -> None:
    sid = sender_for(api).send_sms(TO, "Your code is 123456.")
    [message] = api.messages(to=TO)
    assert sid == message["sid"] and sid.startswith("SM") and len(sid) == 34
    assert message["From"] == FROM and message["Body"] == "Your code is 123456."


def test_wrong_credentials_are_final(api: FakeTwilioApi) -> None:
    sender = TwilioSender(
        api.account_sid, "wrong-token", FROM, api.url, max_attempts=3, base_delay=0.01
    )
    with pytest.raises(SmsFailed) as failed:
        sender.send_sms(TO, "hello")
    assert failed.value.final
    assert "401" in failed.value.reason and "20003" in failed.value.reason
    assert api.unauthorized == 1 and api.messages() == []


def test_server_errors_are_retried_with_back_off_then_not_final(
    api: FakeTwilioApi,
) -> None:
    api.fail_next(500, times=5)
    started = time.monotonic()
    with pytest.raises(SmsFailed) as failed:
        sender_for(api, base_delay=0.1).send_sms(TO, "hello")
    assert not failed.value.final
    assert failed.value.reason == "HTTP 500, Twilio error 20500 (after 3 attempts)"
    assert [c.status for c in api.records()] == [500, 500, 500]
    assert time.monotonic() - started >= 0.3  # 0.1 + 0.2 s of back-off


def test_a_server_error_then_success_delivers_once(api: FakeTwilioApi) -> None:
    api.fail_next(503, times=2)
    sid = sender_for(api).send_sms(TO, "hello")
    assert [c.status for c in api.records()] == [503, 503, 201]
    assert [m["sid"] for m in api.messages()] == [sid]


def test_unsubscribed_recipient_is_final_at_once_without_personal_data(
    api: FakeTwilioApi,
) -> None:
    api.fail_next(400, code=21610)
    with pytest.raises(SmsFailed) as failed:
        sender_for(api).send_sms(TO, "secret text")
    assert failed.value.final
    assert "21610" in failed.value.reason and "unsubscribed" in failed.value.reason
    assert len(api.records()) == 1


def test_invalid_number_reason_does_not_quote_the_number(api: FakeTwilioApi) -> None:
    with pytest.raises(SmsFailed) as failed:
        sender_for(api).send_sms("0612340001", "secret text")
    assert failed.value.final and "21211" in failed.value.reason
    assert "0612340001" not in failed.value.reason
    assert "secret" not in failed.value.reason


def test_too_many_requests_honours_retry_after(api: FakeTwilioApi) -> None:
    api.fail_next(429, retry_after=1)
    started = time.monotonic()
    sender_for(api, base_delay=0.01).send_sms(TO, "hello")
    assert time.monotonic() - started >= 1.0
    assert [c.status for c in api.records()] == [429, 201]


def test_too_many_requests_without_retry_after_backs_off(api: FakeTwilioApi) -> None:
    api.fail_next(429, times=2)
    sender_for(api).send_sms(TO, "hello")
    assert [c.status for c in api.records()] == [429, 429, 201]


def test_a_retry_after_beyond_max_delay_gives_up_at_once(api: FakeTwilioApi) -> None:
    api.fail_next(429, retry_after=120)
    with pytest.raises(SmsFailed) as failed:
        sender_for(api, max_delay=5).send_sms(TO, "hello")
    assert not failed.value.final
    assert "retry after 120 s" in failed.value.reason
    assert len(api.records()) == 1


def test_an_unreachable_api_is_a_temporary_failure() -> None:
    sender = TwilioSender(
        "AC" + "0" * 32,
        "token",
        FROM,
        f"http://127.0.0.1:{free_port()}",
        max_attempts=2,
        base_delay=0.01,
        timeout=2,
    )
    with pytest.raises(SmsFailed) as failed:
        sender.send_sms(TO, "hello")
    assert not failed.value.final
    assert failed.value.reason.startswith("network error (ConnectionError)")


def test_incomplete_configuration_is_refused() -> None:
    with pytest.raises(ValueError):
        TwilioSender("", "token", FROM)
    with pytest.raises(ValueError):
        TwilioSender("AC" + "0" * 32, "token", FROM, max_attempts=0)
