"""The scrubber: secrets Podium read are replaced by value; the usual shapes by pattern."""

from __future__ import annotations

import logging

import pytest

from podium.redact import (
    RedactingFilter,
    mask_url,
    redact,
    redact_value,
    register_secret,
    register_sensitive_headers,
)


@pytest.mark.parametrize(("text", "gone"), [
    ("Cookie: session=abc123; theme=dark", "abc123"),
    ("Set-Cookie: id=xyz987; HttpOnly", "xyz987"),
    ("pwd=s3cr3t&next=1", "s3cr3t"),
    ("passphrase=open sesame", "open sesame"),
    ("clone https://ghp_abcdefghij0123456789@github.com/o/r failed", "ghp_abcdefghij"),
    ("https://user:hunter22@host/db", "hunter22"),
    ("key: -----BEGIN RSA PRIVATE KEY-----\nMIIEpAIB\n-----END RSA PRIVATE KEY-----", "MIIEpAIB"),
    ("Authorization: Bearer abc", "abc"),
    ("GET /?h=Authorization%3A%20Bearer%20abcdef12", "abcdef12"),
    ('password="correct horse battery"', "horse battery"),
    ("password=correct horse battery", "horse"),
    ("password = hunter2", "hunter2"),
])
def test_patterns_the_scrubber_used_to_miss(text: str, gone: str) -> None:
    assert gone not in redact(text)
    assert "***" in redact(text)


@pytest.mark.parametrize("text", [
    "BEARER: sk-abcdefghijklmnopqrst", "xoxb-0123456789ab", "AKIAABCDEFGHIJKLMNOP",
    "eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.SflKxwRJSMeKKF2QT4", "API_KEY=abc", "ACCESS-KEY: abc",
    "CREDENTIALS=abc", "x-Auth-thing: abc", "Secret='abc'", "PASSWD=abc", "PRIVATE_KEY=abc",
])
def test_the_quick_check_before_the_patterns_lets_every_shape_through(text: str) -> None:
    # The patterns run only where a word one of them needs appears, in any case.
    assert "abc" not in redact(text.replace("abc", "abc123")).replace("***", "")
    assert "***" in redact(text)


def test_text_beyond_ascii_goes_through_the_patterns() -> None:
    # Ignore-case matching takes the Kelvin sign for k and the long s for s.
    assert "hunter22" not in redact("pa\u017fsword=hunter22")
    assert "abc12345678" not in redact("to\u212aen abc12345678")


def test_an_ordinary_error_message_is_left_as_it_is() -> None:
    for text in ("503 Service Unavailable", "try again", "connection refused"):
        assert redact(text) == text


def test_prose_that_says_token_or_basic_is_left_alone() -> None:
    for text in ("invalid token provided", "a basic idea", "token expired"):
        assert redact(text) == text


def test_a_registered_value_is_replaced_wherever_it_appears() -> None:
    register_secret("v4lue-0f-a-t0ken")
    assert redact("credential rejected: v4lue-0f-a-t0ken!") == "credential rejected: ***!"
    assert redact("q=v4lue-0f-a-t0ken") == "q=***"
    assert redact_value({"a": ["x v4lue-0f-a-t0ken y", 3]}) == {"a": ["x *** y", 3]}
    register_secret("ab")  # too short to be a secret worth hiding everywhere
    assert redact("abc") == "abc"


def test_sensitive_headers_and_database_urls_register_their_secrets() -> None:
    register_sensitive_headers({"X-Api-Key": "k3y-from-the-file", "Accept": "json-please"})
    assert redact("k3y-from-the-file") == "***"
    assert redact("json-please") == "json-please"
    assert mask_url("postgresql://u:p4ss-w0rd@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert redact("auth failed for p4ss-w0rd") == "auth failed for ***"


def test_log_records_are_scrubbed_with_their_tracebacks() -> None:
    register_secret("l0gged-s3cret")
    record = logging.LogRecord("podium", logging.WARNING, __file__, 1, "saw %s", ("l0gged-s3cret",),
                               None)
    try:
        raise RuntimeError("boom l0gged-s3cret")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    assert RedactingFilter().filter(record)
    assert "l0gged-s3cret" not in record.getMessage()
    assert record.exc_text is not None
    assert "l0gged-s3cret" not in record.exc_text
