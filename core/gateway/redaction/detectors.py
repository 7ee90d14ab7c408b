"""Find personal data and credentials in free text, as typed spans.

Each data class has one detector; :func:`detect` runs the requested ones and resolves
overlaps (longest span wins, then the more specific class: a private key block beats
anything inside it, a card beats a phone). Everything is deterministic: no network, no
model, no randomness, so the same text always yields the same spans.

Which library does what, and why:

* ``phonenumbers`` (libphonenumber's metadata) finds phones with ``PhoneNumberMatcher`` at
  leniency ``VALID`` for a default region. Its VALID level still accepts order numbers and
  bare digit runs, so two filters follow: a bare run of digits needs a phone word nearby,
  and a number right after an order/invoice/ticket word is not a phone.
* ``python-stdnum`` owns every checksum: Luhn for cards, ISO 13616 for IBANs, and the
  national IDs (German Steuer-ID, French NIR, Spanish DNI/NIE, Italian codice fiscale,
  Dutch BSN). A regex only proposes candidates; stdnum decides. Steuer-ID, BSN and a bare
  nine-digit SSN are plain digit runs with weak checksums, so they need a context word.
* ``ipaddress`` validates IPv4/IPv6 candidates (version strings and times are rejected).
* ``detect_secrets`` supplies the provider key formats it maintains (AWS, GitHub, Slack,
  Stripe, OpenAI), the JWT well-formedness check and the Shannon entropy used to accept a
  generic ``api_key: <value>``. Its scanners are built for code files (quoted assignments,
  baselines, online verification), so only those pieces are used, on our own spans; it is
  imported on first use because it pulls in ``requests``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache, lru_cache

import phonenumbers
from stdnum import iban, luhn
from stdnum.de import idnr
from stdnum.es import dni, nie
from stdnum.fr import nir
from stdnum.it import codicefiscale
from stdnum.nl import bsn

CREDENTIAL_CLASSES = ("private_key", "bearer_token", "url_password", "api_key")
PERSONAL_CLASSES = (
    "payment_card", "iban", "national_id", "email", "ip_address", "phone",
)  # fmt: skip
ALL = CREDENTIAL_CLASSES + PERSONAL_CLASSES  # also the tie-break order, most specific first


@dataclass(frozen=True, order=True)
class Span:
    start: int
    end: int
    data_class: str
    text: str


_Found = Iterator[tuple[int, int]]


def _near(text: str, start: int, words: re.Pattern[str], width: int = 40) -> bool:
    return words.search(text[max(0, start - width) : start]) is not None


# -- credentials ---------------------------------------------------------------------------

_PEM = re.compile(
    r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY( BLOCK|)-----.*?-----END \1PRIVATE KEY\2-----",
    re.DOTALL,
)
_BEARER = re.compile(r"\bBearer\s+([A-Za-z0-9\-._~+/]{8,}=*)", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@]*:([^\s@/]+)@(?=[\w\[])")
_KEY_FORMATS = (
    re.compile(r"sk-ant-[a-z0-9]+-[A-Za-z0-9_\-]{20,}"),
    re.compile(r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}"),
    re.compile(r"github_pat_[A-Za-z0-9_]{22,}"),
    re.compile(r"(?:sk|rk)_(?:live|test)_[0-9a-zA-Z]{16,}"),
    re.compile(r"AIza[0-9A-Za-z_\-]{35}"),
)
_JWT = re.compile(r"eyJ[A-Za-z0-9_\-]+\.eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*")
_KEYWORD = re.compile(
    r"(?<![A-Za-z0-9])[\w\-]*?(?:api[_ -]?key|api[_ -]?token|access[_ -]?token|access[_ -]?key"
    r"|secret[_ -]?key|client[_ -]?secret|auth[_ -]?token|secret|token)\b[\"']?"
    r"\s*(?:[:=]|=>|\bis\b)\s*[\"']?([A-Za-z0-9_\-+/=.]{16,})",
    re.IGNORECASE,
)


@cache
def _provider_patterns() -> tuple[re.Pattern[str], ...]:
    from detect_secrets.plugins.aws import AWSKeyDetector
    from detect_secrets.plugins.github_token import GitHubTokenDetector
    from detect_secrets.plugins.openai import OpenAIDetector
    from detect_secrets.plugins.slack import SlackDetector
    from detect_secrets.plugins.stripe import StripeDetector

    plugins = (GitHubTokenDetector, OpenAIDetector, SlackDetector, StripeDetector)
    aws_key_id = next(iter(AWSKeyDetector.denylist))  # the second needs code-style quotes
    return (aws_key_id, *(pattern for plugin in plugins for pattern in plugin.denylist))


def _jwt_valid(token: str) -> bool:
    from detect_secrets.plugins.jwt import JwtTokenDetector

    return bool(JwtTokenDetector.is_formally_valid(token))


def _entropy(value: str) -> float:
    from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString

    return float(Base64HighEntropyString().calculate_shannon_entropy(value))


def _api_keys(text: str) -> _Found:
    for pattern in (*_provider_patterns(), *_KEY_FORMATS):
        for m in pattern.finditer(text):
            start, end = m.span()
            if start and (text[start - 1].isalnum() or text[start - 1] in "_-"):
                continue  # inside a longer word
            while end < len(text) and (text[end].isalnum() or text[end] in "_-"):
                end += 1  # a provider regex may stop short of the whole token
            yield start, end
    for m in _JWT.finditer(text):
        if _jwt_valid(m.group()):
            yield m.span()
    for m in _KEYWORD.finditer(text):
        value = m.group(1)
        has_digit, has_alpha = any(c.isdigit() for c in value), any(c.isalpha() for c in value)
        if has_digit and has_alpha and _entropy(value) >= 3.0:
            yield m.span(1)


def _private_keys(text: str) -> _Found:
    return (m.span() for m in _PEM.finditer(text))


def _bearer_tokens(text: str) -> _Found:
    return (m.span(1) for m in _BEARER.finditer(text))


def _url_passwords(text: str) -> _Found:
    return (m.span(1) for m in _URL_PASSWORD.finditer(text))


# -- personal data --------------------------------------------------------------------------

_EMAIL = re.compile(r"(?<![\w.%+\-])[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*"
                    r"\.[A-Za-z]{2,}\b")  # fmt: skip
_IN_URL_AUTHORITY = re.compile(r"://[^\s/@]*$")


def _emails(text: str) -> _Found:
    for m in _EMAIL.finditer(text):
        if not _IN_URL_AUTHORITY.search(text, max(0, m.start() - 200), m.start()):
            yield m.span()


_CARD = re.compile(r"(?<![\w\-.])(?:\d[ \-]?){12,18}\d(?![\d\-]|[.,]\d)")
# Visa, Mastercard/Maestro, Amex/JCB/Diners, Discover/UnionPay/Maestro: issuer prefixes
_CARD_IIN = re.compile(r"4|5|2[2-7]|3[0468]|3[57]|6(?:011|2|3|4[4-9]|5|7)")


def _cards(text: str) -> _Found:
    for m in _CARD.finditer(text):
        digits = re.sub(r"[ \-]", "", m.group())
        if 13 <= len(digits) <= 19 and _CARD_IIN.match(digits) and luhn.is_valid(digits):
            yield m.span()


_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?"
                   r"(?![A-Za-z0-9])")  # fmt: skip


def _ibans(text: str) -> _Found:
    for m in _IBAN.finditer(text):
        candidate = m.group()
        while len(candidate.replace(" ", "")) >= 15:
            if iban.is_valid(candidate):
                yield m.start(), m.start() + len(candidate)
                break
            candidate = candidate.rsplit(" ", 1)[0] if " " in candidate else candidate[:-1]


_SSN = re.compile(r"(?<![\d\-])(\d{3})([ \-]?)(\d{2})\2(\d{4})(?![\d\-])")
_SSN_WORDS = re.compile(r"\b(?:SSN|social security|SS#|SS No)", re.IGNORECASE)
_DIGITS_11 = re.compile(r"(?<!\d)(?<!\d )\d{2} ?\d{3} ?\d{3} ?\d{3}(?![\d])")
_IDNR_WORDS = re.compile(r"Steuer|IdNr|Identifikationsnummer|\bTIN\b|tax ID", re.IGNORECASE)
_NIR = re.compile(r"(?<!\d)(?<!\d )[12] ?\d{2} ?\d{2} ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}(?!\d)")
_DNI_NIE = re.compile(r"(?<![A-Za-z0-9])(?:\d{8}|[XYZ]\d{7})-?[A-Z](?![A-Za-z0-9])")
_CF = re.compile(r"(?<![A-Za-z0-9])[A-Z]{6}\d{2}[A-Z]\d{2}[A-Z]\d{3}[A-Z](?![A-Za-z0-9])")
_BSN = re.compile(r"(?<![\d.])\d{4}\.?\d{2}\.?\d{3}(?![\d.])|(?<![\d.])\d{9}(?!\d)")
_BSN_WORDS = re.compile(r"\bBSN\b|burgerservicenummer|sofinummer", re.IGNORECASE)


def _ssn_ok(m: re.Match[str], text: str) -> bool:
    area, group, serial = int(m.group(1)), int(m.group(3)), int(m.group(4))
    if area in (0, 666) or area >= 900 or group == 0 or serial == 0:
        return False
    return bool(m.group(2)) or _near(text, m.start(), _SSN_WORDS)


def _national_ids(text: str) -> _Found:
    yield from (m.span() for m in _SSN.finditer(text) if _ssn_ok(m, text))
    for m in _DIGITS_11.finditer(text):
        if idnr.is_valid(m.group()) and _near(text, m.start(), _IDNR_WORDS):
            yield m.span()
    yield from (m.span() for m in _NIR.finditer(text) if nir.is_valid(m.group()))
    for m in _DNI_NIE.finditer(text):
        value = m.group()
        if (nie if value[0] in "XYZ" else dni).is_valid(value):
            yield m.span()
    yield from (m.span() for m in _CF.finditer(text) if codicefiscale.is_valid(m.group()))
    for m in _BSN.finditer(text):
        if bsn.is_valid(m.group()) and _near(text, m.start(), _BSN_WORDS):
            yield m.span()


_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:\.\d{1,3}){0,3}"
                   r"(?![\w:])")  # fmt: skip
_VERSION_WORDS = re.compile(
    r"(?:\bv|version|release|build|firmware|\bver\.?|section|clause|chapter|article|§)\s*$",
    re.IGNORECASE,
)
# Addresses that name a well-known service or this machine, never a person.
_NOT_PERSONAL = frozenset(
    ["0.0.0.0", "127.0.0.1", "::", "::1", "8.8.8.8", "8.8.4.4", "1.1.1.1", "1.0.0.1",  # noqa: S104
     "9.9.9.9", "208.67.222.222", "208.67.220.220"]
)  # fmt: skip


def _ip_addresses(text: str) -> _Found:
    for pattern in (_IPV4, _IPV6):
        for m in pattern.finditer(text):
            value = m.group()
            if value.count(":") < 2 and pattern is _IPV6:
                continue
            try:
                address = ipaddress.ip_address(value)
            except ValueError:
                continue
            if str(address) in _NOT_PERSONAL or _near(text, m.start(), _VERSION_WORDS, 12):
                continue
            yield m.span()


_PHONE_WORDS = re.compile(
    r"\b(?:phone|tel|telephone|call|called|mobile|cell|fax|ph|reach|text|sms|whatsapp"
    r"|telefon|t[ée]l[ée]phone|contact|number|dial)\b",
    re.IGNORECASE,
)
_NOT_PHONE_WORDS = re.compile(
    r"\b(?:order|invoice|inv|ticket|ref|reference|tracking|account|acct|po|case|item|sku"
    r"|serial|customer id|id)\s*(?:no\.?|number|#)?\s*[:#]?\s*$",
    re.IGNORECASE,
)


# No phone number has fewer digits than this; libphonenumber's matcher is pure Python and
# costs ~0.3 ms per digit run it examines, so text without such a run skips it.
_PHONE_CANDIDATE = re.compile(r"(?:\d[\s().\-/]{0,2}){6,}")


def _phones(text: str, region: str) -> _Found:
    if _PHONE_CANDIDATE.search(text) is None:
        return
    leniency = phonenumbers.Leniency.VALID
    for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=leniency):
        start, raw = match.start, match.raw_string
        if _near(text, start, _NOT_PHONE_WORDS, 24):
            continue
        if raw.isdigit() and not _near(text, start, _PHONE_WORDS):
            continue  # a bare digit run is more often an ID than a phone
        yield start, match.end


_DETECTORS: dict[str, Callable[[str], Iterable[tuple[int, int]]]] = {
    "private_key": _private_keys,
    "bearer_token": _bearer_tokens,
    "url_password": _url_passwords,
    "api_key": _api_keys,
    "payment_card": _cards,
    "iban": _ibans,
    "national_id": _national_ids,
    "email": _emails,
    "ip_address": _ip_addresses,
}


def detect(text: str, classes: Iterable[str] = ALL, *, region: str = "US") -> list[Span]:
    """Spans of the requested data classes in ``text``, sorted and never overlapping.

    Long texts are remembered (by value): a flow's system prompt and reference documents
    come back with every call, and scanning them costs ~3 µs a character.
    """
    wanted = frozenset(classes)
    unknown = wanted - set(ALL)
    if unknown:
        raise ValueError(f"unknown data classes: {sorted(unknown)}")
    if len(text) >= REMEMBER_MIN_CHARS:
        return list(_remembered(text, wanted, region))
    return _detect(text, wanted, region)


REMEMBER_MIN_CHARS = 1024


@lru_cache(maxsize=256)
def _remembered(text: str, wanted: frozenset[str], region: str) -> tuple[Span, ...]:
    return tuple(_detect(text, wanted, region))


def _detect(text: str, wanted: frozenset[str], region: str) -> list[Span]:
    found: list[tuple[int, int, str]] = []
    for data_class in ALL:
        if data_class not in wanted:
            continue
        spans = _phones(text, region) if data_class == "phone" else _DETECTORS[data_class](text)
        found.extend((start, end, data_class) for start, end in spans if end > start)
    rank = {name: i for i, name in enumerate(ALL)}
    found.sort(key=lambda s: (s[0] - s[1], rank[s[2]], s[0]))  # longest, then most specific
    kept: list[Span] = []
    for start, end, data_class in found:
        if all(end <= k.start or start >= k.end for k in kept):
            kept.append(Span(start, end, data_class, text[start:end]))
    return sorted(kept)
