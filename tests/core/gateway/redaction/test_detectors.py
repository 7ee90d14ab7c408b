"""One test per detector, plus overlap resolution and the class filter."""

from __future__ import annotations

import pytest

from core.gateway.redaction import ALL, Span, detect

PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEow sk-ant-api03-"
    + "a" * 40
    + "\n-----END RSA PRIVATE KEY-----"
)


def found(text: str, *classes: str, region: str = "US") -> list[tuple[str, str]]:
    return [(s.data_class, s.text) for s in detect(text, classes or ALL, region=region)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail jane.doe@acme.com now", [("email", "jane.doe@acme.com")]),
        ("call (415) 555-2671", [("phone", "(415) 555-2671")]),
        ("card 4111 1111 1111 1111.", [("payment_card", "4111 1111 1111 1111")]),
        ("IBAN DE89 3704 0044 0532 0130 00 EUR", [("iban", "DE89 3704 0044 0532 0130 00")]),
        ("SSN 219-09-9999", [("national_id", "219-09-9999")]),
        ("Steuer-ID 36 574 261 809", [("national_id", "36 574 261 809")]),
        ("NIR 2 95 10 99 126 111 93", [("national_id", "2 95 10 99 126 111 93")]),
        (
            "DNI 54362315K, NIE X2482300W",
            [("national_id", "54362315K"), ("national_id", "X2482300W")],
        ),
        ("CF RCCMNL83S18D969H", [("national_id", "RCCMNL83S18D969H")]),
        ("BSN 111222333", [("national_id", "111222333")]),
        (
            "from 203.0.113.7 and 2001:db8::1",
            [("ip_address", "203.0.113.7"), ("ip_address", "2001:db8::1")],
        ),
        ("key AKIAIOSFODNN7EXAMPLE here", [("api_key", "AKIAIOSFODNN7EXAMPLE")]),
        ("Authorization: Bearer abc.def-123_456", [("bearer_token", "abc.def-123_456")]),
        ("postgres://app:pa55word@db:5432/x", [("url_password", "pa55word")]),
        (PEM, [("private_key", PEM)]),
    ],
)
def test_each_detector(text: str, expected: list[tuple[str, str]]) -> None:
    assert found(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112",  # fails Luhn
        "IBAN DE88 3704 0044 0532 0130 00",  # wrong check digits
        "SSN 000-12-3456, 666-12-3456, 900-12-3456, 123-00-4567, 123-45-0000",
        "Kundennummer 36574261809",  # a Steuer-ID needs a context word
        "item 111222333",  # a BSN needs a context word
        "version 1.2.3.4, §3.2.1.4, DNS 8.8.8.8, bind 0.0.0.0, at 10:30:00",
        "Order 4155552671 and invoice 2024-001234",
        "the token expired; rotate your api key",
        "https://docs.acme.com:8443/guide",
    ],
)
def test_hard_negatives(text: str) -> None:
    assert found(text) == []


@pytest.mark.parametrize(
    "key",
    [
        "sk-ant-api03-" + "Ab1_" * 20,
        "sk-proj-" + "x9Y" * 16,
        "ghp_" + "a1" * 18,
        "github_pat_11" + "A" * 20 + "_" + "b" * 59,
        "xoxb-123456789012-1234567890123-abcdefabcdefabcdefabcdef",
        "sk_live_" + "a1B2" * 25,
        "rk_live_" + "a1B2" * 8,
        "AIza" + "Sy" * 17 + "X",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
    ],
)
def test_api_key_formats(key: str) -> None:
    assert found(f"here: {key} ok", "api_key") == [("api_key", key)]


def test_generic_keyword_key_needs_entropy() -> None:
    assert found("api_key = Zq8xK2mP9vL4nR7tW1", "api_key") == [("api_key", "Zq8xK2mP9vL4nR7tW1")]
    assert found("api_key = aaaaaaaaaaaaaaaaaaaa", "api_key") == []


def test_overlaps_keep_the_longest_then_most_specific() -> None:
    assert found(f"see {PEM}") == [("private_key", PEM)]  # the key inside is not separate
    assert found("pay 4111-1111-1111-1111") == [("payment_card", "4111-1111-1111-1111")]
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
    assert found(f"Authorization: Bearer {jwt}") == [("bearer_token", jwt)]
    assert found("ftp://bob:s3cret@ftp.acme.com") == [("url_password", "s3cret")]


def test_phone_region() -> None:
    assert found("Tel. 030 12345678", "phone", region="DE") == [("phone", "030 12345678")]
    assert found("Tel. 030 12345678", "phone", region="US") == []


def test_spans_are_sorted_with_offsets() -> None:
    text = "a@b.io then 10.0.0.1"
    spans = detect(text)
    assert spans == [Span(0, 6, "email", "a@b.io"), Span(12, 20, "ip_address", "10.0.0.1")]
    assert all(text[s.start : s.end] == s.text for s in spans)


def test_class_filter_and_unknown_class() -> None:
    assert found("a@b.io 10.0.0.1", "ip_address") == [("ip_address", "10.0.0.1")]
    with pytest.raises(ValueError, match="unknown data classes"):
        detect("x", ["passport"])
