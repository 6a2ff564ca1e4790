from __future__ import annotations

from channels.identity_assertion import metadata_for, sign, verified_identity


def test_round_trip_and_tampering() -> None:
    meta = metadata_for("s3cret", "web-1", "email", "a@example.com")
    assert verified_identity("s3cret", "web-1", meta) == ("email", "a@example.com")
    assert verified_identity("other", "web-1", meta) is None
    assert verified_identity("s3cret", "web-2", meta) is None
    assert verified_identity(None, "web-1", meta) is None
    forged = {"identity": {**meta["identity"], "value": "b@example.com"}}
    assert verified_identity("s3cret", "web-1", forged) is None
    assert verified_identity("s3cret", "web-1", {"identity": "x"}) is None
    assert verified_identity("s3cret", "web-1", None) is None


def test_signature_is_hmac_sha256_hex() -> None:
    import hashlib
    import hmac

    expected = hmac.new(b"k", b"s|phone|+31", hashlib.sha256).hexdigest()
    assert sign("k", "s", "phone", "+31") == expected


def test_secret_comes_from_the_settings_object() -> None:
    from channels.identity_assertion import secret_value
    from crm_settings import Settings

    key = "k" * 32
    assert secret_value(Settings(identity_secret=key)) == key
    assert secret_value(Settings(identity_secret="")) is None
    assert secret_value(Settings(identity_secret=None)) is None
    meta = metadata_for(key, "web-1", "email", "a@example.com")
    secret = secret_value(Settings(identity_secret=key))
    assert verified_identity(secret, "web-1", meta) == ("email", "a@example.com")
