"""Personal data in text: found by pattern and checksum, counted by type, replaced by its type.

Each recognizer is a pattern that proposes candidates and a check that keeps the real ones, so a number that merely
looks like an identifier is left alone: payment cards pass the Luhn check, IBANs the ISO 13616 mod-97 check, a
mainland-China resident identity number its ISO 7064 MOD 11-2 check digit and a real birth date, a unified social
credit code its GB 32100-2015 check character, an IP address Python's `ipaddress`, a phone number Google's
libphonenumber (`phonenumbers`: E.164, or a national form valid in `phone_region`). Patterns bound themselves with
explicit character classes rather than `\\b`, because Python counts Chinese characters as word characters: in
"邮箱zw@example.cn" the address starts at "zw".

Names and street addresses are not looked for: that needs a named-entity model, and none that installs offline here
comes from its authors (bench/RESULTS.md, "Personal data"). Redaction replaces each span with its type in angle
brackets (`<EMAIL>`), so a model trained on the text learns that something was there, never what.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date

from core.errors import CheckFailedError, exception_line
from core.vocabulary import PiiTypeName
from tasks.data import TextTable, make_table

# Longest first within a type's alternatives; the order of RECOGNIZERS settles overlaps between types.
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,24}"
                    r"(?![A-Za-z0-9\-])")
_CN_ID = re.compile(r"(?<![0-9A-Za-z])[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]"
                    r"(?![0-9A-Za-z])")
_USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
# Registration authority, category (a digit), the region's 6 digits, the organisation's code and the check.
_CN_USCC = re.compile(rf"(?<![0-9A-Za-z])[{_USCC_CHARS}][1-9]\d{{6}}[{_USCC_CHARS}]{{10}}(?![0-9A-Za-z])")
_CN_MOBILE = re.compile(r"(?<![\d+])(?:\+?86[ \-]?)?1[3-9]\d(?:[ \-]?\d{4}){2}(?!\d)")
_CARD = re.compile(r"(?<![0-9A-Za-z+\-])[2-6]\d{3}(?:[ \-]?\d{2,6}){2,4}(?![0-9A-Za-z\-])")
_DIGIT_GROUP = re.compile(r"[ \-]?\d+")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?P<tail> ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.]|\.\d)")
_IPV6 = re.compile(r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{1,4}:){2,7}:?[0-9A-Fa-f]{0,4}(?:::?[0-9A-Fa-f]{1,4})*"
                   r"(?![0-9A-Fa-f:])")
_MIN_PHONE_DIGITS = 7


@dataclass(frozen=True)
class Finding:
    """One span of personal data: its type and where it is (the value itself is never kept)."""

    kind: PiiTypeName
    start: int
    end: int


@dataclass(frozen=True)
class Recognizer:
    kind: PiiTypeName
    candidates: Callable[[str], Iterable[tuple[int, int]]]
    check: Callable[[str], bool] = lambda _: True


def _matches(pattern: re.Pattern[str]) -> Callable[[str], Iterable[tuple[int, int]]]:
    return lambda text: (match.span() for match in pattern.finditer(text))


def _digits(value: str) -> str:
    return "".join(character for character in value if character.isdigit())


def luhn_valid(value: str) -> bool:
    digits = [int(d) for d in _digits(value)]
    odd, even = digits[-1::-2], digits[-2::-2]
    return 13 <= len(digits) <= 19 and (sum(odd) + sum(sum(divmod(2 * d, 10)) for d in even)) % 10 == 0


# Issuer prefixes (ranges of the first digits) and the lengths their cards have: Visa, American Express, Mastercard
# (old and 2-series), Discover, UnionPay, JCB, Diners Club. An 18-digit identity number passes the Luhn check one
# time in ten; it never has a card's prefix and length together.
_CARD_ISSUERS = (((4, 4), (13, 16, 19)), ((34, 34), (15,)), ((37, 37), (15,)), ((51, 55), (16,)),
                 ((2221, 2720), (16,)), ((6011, 6011), (16, 17, 18, 19)), ((644, 649), (16, 17, 18, 19)),
                 ((65, 65), (16, 17, 18, 19)), ((62, 62), (16, 17, 18, 19)), ((3528, 3589), (16, 17, 18, 19)),
                 ((36, 36), (14,)), ((300, 305), (14,)))


def card_valid(value: str) -> bool:
    """An issuer's prefix with one of its lengths, and the Luhn check."""
    digits = _digits(value)
    known = any(low <= int(digits[: len(str(low))]) <= high and len(digits) in lengths
                for (low, high), lengths in _CARD_ISSUERS)
    return known and luhn_valid(digits)


# ISO 13616's registry: each country's IBAN length. A country outside it has no IBANs.
IBAN_LENGTHS = dict(
    AD=24, AE=23, AL=28, AT=20, AZ=28, BA=20, BE=16, BG=22, BH=22, BR=29, CH=21, CR=22, CY=28, CZ=24, DE=22, DK=18,
    DO=28, EE=20, EG=29, ES=24, FI=18, FO=18, FR=27, GB=22, GE=22, GI=23, GL=18, GR=27, GT=28, HR=21, HU=28, IE=22,
    IL=23, IQ=23, IS=26, IT=27, JO=30, KW=30, KZ=20, LB=28, LC=32, LI=21, LT=20, LU=20, LV=21, MC=27, MD=24, ME=22,
    MK=19, MR=27, MT=31, MU=30, NL=18, NO=15, PK=24, PL=28, PS=29, PT=25, QA=29, RO=24, RS=22, SA=24, SC=31, SE=24,
    SI=19, SK=24, SM=27, ST=25, SV=28, TL=23, TN=24, TR=26, UA=29, VA=22, VG=24, XK=20,
)


def iban_valid(value: str) -> bool:
    """ISO 13616: the country's length, then (country and check digits moved to the end, letters as 10..35) the
    number mod 97 is 1."""
    compact = value.replace(" ", "")
    if IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(character, 36)) for character in rearranged)) % 97 == 1


def cn_id_valid(value: str) -> bool:
    """GB 11643-1999: a real birth date (characters 7-14) and the ISO 7064 MOD 11-2 check character."""
    if not _has_birth_date(value):
        return False
    total = sum(int(digit) * (2 ** (17 - position) % 11) for position, digit in enumerate(value[:17]))
    return "10X98765432"[total % 11] == value[17].upper()


def _has_birth_date(value: str) -> bool:
    """Characters 7-14 are a real date from 1800 on, as in an identity number."""
    try:
        return date(int(value[6:10]), int(value[10:12]), int(value[12:14])).year >= 1800
    except ValueError:
        return False


def cn_uscc_valid(value: str) -> bool:
    """GB 32100-2015: the 18th character checks the first 17 (weights 3^i mod 31 over the code's 31 characters).
    Eighteen digits with a birth date where an identity number has one are taken for a mistyped identity number,
    not a code that happens to pass this check (one in 31 does)."""
    if value.isdigit() and _has_birth_date(value):
        return False
    total = sum(_USCC_CHARS.index(character) * pow(3, position, 31) for position, character in enumerate(value[:17]))
    return _USCC_CHARS[(31 - total % 31) % 31] == value[17]


def cn_mobile_valid(value: str) -> bool:
    digits = _digits(value)
    return len(digits) == 11 or (len(digits) == 13 and digits.startswith("86"))


def ip_valid(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def ipv6_valid(value: str) -> bool:
    """A real IPv6 address with at least three groups written out: `a::b`-like strings in code are not addresses."""
    groups = [group for group in value.split(":") if group]
    return len(groups) >= 3 and any(character.isdigit() for character in value) and ip_valid(value)


# The word before a dotted quad that makes it a section, revision or version number rather than an address.
_NUMBERING_WORDS = re.compile(r"(?<![A-Za-z])(?:sections?|chapter|revision|rev|version|ver|release|v|§)\.?\s*$",
                              re.I)
_DECIMAL = re.compile(r"^\d+[.,]\d+$")


def _iban_candidates(text: str) -> Iterable[tuple[int, int]]:
    """Each match, then the match less its short last group: in "ES95 5022 … 6993 C-compiler" the "C" is a word."""
    for match in _IBAN.finditer(text):
        yield match.span()
        if (match.group("tail") or "").startswith(" "):
            yield match.start(), match.start("tail")


def _card_candidates(text: str) -> Iterable[tuple[int, int]]:
    """Each run of digit groups, then the run less its last groups, longest first ("6011… 300 baud": the 300 is
    a word); none inside an IBAN-shaped run, valid or not, whose digits are an account's, not a card's."""
    accounts = [match.span() for match in _IBAN.finditer(text)]
    for match in _CARD.finditer(text):
        if any(start < match.end() and match.start() < end for start, end in accounts):
            continue
        ends = [match.start() + group.end() for group in _DIGIT_GROUP.finditer(match.group())]
        yield from ((match.start(), end) for end in reversed(ends))


def _unnumbered(candidates: Callable[[str], Iterable[tuple[int, int]]]) -> Callable[[str], Iterable[tuple[int, int]]]:
    """`candidates` less those written after a numbering word ("Section 2.4.3.5", "revision 1.17.2.7")."""
    return lambda text: [(start, end) for start, end in candidates(text)
                         if not _NUMBERING_WORDS.search(text[max(0, start - 12) : start])]


def phone_candidates(region: str) -> Callable[[str], Iterable[tuple[int, int]]]:
    """Numbers libphonenumber finds valid: international (+...) anywhere, national ones in `region`'s forms; not a
    decimal number ("31.01875") nor the digits after a decimal point ("2.8333333333")."""
    import phonenumbers

    def find(text: str) -> Iterable[tuple[int, int]]:
        if sum(character.isdigit() for character in text) < _MIN_PHONE_DIGITS:
            return []
        matcher = phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID)
        return [(match.start, match.end) for match in matcher
                if not _DECIMAL.match(match.raw_string) and not _after_decimal_point(text, match.start)]

    return find


def _after_decimal_point(text: str, start: int) -> bool:
    return start >= 2 and text[start - 1] in ".," and text[start - 2].isdigit()


def recognizers(phone_region: str = "US") -> list[Recognizer]:
    """Every recognizer, in the order that settles overlaps (the more specific identifier first)."""
    return [
        Recognizer("EMAIL", _matches(_EMAIL)),
        Recognizer("CN_ID", _matches(_CN_ID), cn_id_valid),
        Recognizer("CN_USCC", _matches(_CN_USCC), cn_uscc_valid),
        Recognizer("IBAN", _iban_candidates, iban_valid),
        Recognizer("CARD", _card_candidates, card_valid),
        Recognizer("CN_MOBILE", _matches(_CN_MOBILE), cn_mobile_valid),
        Recognizer("IP", _unnumbered(_matches(_IPV4)), ip_valid),
        Recognizer("IP", _matches(_IPV6), ipv6_valid),
        Recognizer("PHONE", phone_candidates(phone_region)),
    ]


@dataclass
class Scanner:
    """Finds personal data with `recognizers(phone_region)`; overlapping findings keep the earlier recognizer's."""

    phone_region: str = "US"
    _recognizers: list[Recognizer] = field(init=False)

    def __post_init__(self) -> None:
        self._recognizers = recognizers(self.phone_region)

    def find(self, text: str) -> list[Finding]:
        found: list[Finding] = []
        for recognizer in self._recognizers:
            for start, end in recognizer.candidates(text):
                if any(start < other.end and other.start < end for other in found):
                    continue
                if recognizer.check(text[start:end]):
                    found.append(Finding(recognizer.kind, start, end))
        return sorted(found, key=lambda finding: finding.start)

    def redact(self, text: str) -> tuple[str, list[Finding]]:
        """The text with each finding replaced by `<TYPE>`, and the findings."""
        findings = self.find(text)
        pieces, position = [], 0
        for finding in findings:
            pieces += [text[position : finding.start], f"<{finding.kind}>"]
            position = finding.end
        return "".join(pieces) + text[position:], findings


@dataclass(frozen=True)
class TextScan:
    """What a scan of many texts found: counts per type, the first row (from 1) of each, and the texts redacted."""

    counts: dict[str, int]
    first_rows: dict[str, int]
    redacted: list[str | None]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def scan_texts(texts: Iterable[str | None], scanner: Scanner, source: str = "texts") -> TextScan:
    """Scan and redact each text; a text the scan fails on stops validation, named by `source` and its row."""
    counts: Counter[str] = Counter()
    first_rows: dict[str, int] = {}
    redacted: list[str | None] = []
    for row, text in enumerate(texts, start=1):
        if not text:
            redacted.append(text)
            continue
        try:
            clean, findings = scanner.redact(text)
        except Exception as exc:  # a recognizer's library failing on this text: nothing may pass unscanned
            raise CheckFailedError(f"{source}: row {row}: the personal-data scan failed ({exception_line(exc)})") \
                from None
        redacted.append(clean)
        for finding in findings:
            counts[finding.kind] += 1
            first_rows.setdefault(finding.kind, row)
    return TextScan(dict(sorted(counts.items())), first_rows, redacted)


@dataclass(frozen=True)
class TableScan:
    """One table's findings (counts per type, first row of each) and the table with every finding redacted."""

    source: str
    counts: dict[str, int]
    first_rows: dict[str, int]
    redacted: TextTable

    def summary(self) -> str:
        """`3 EMAIL (first at row 2), 1 CN_ID (first at row 7)`: what an error or a log line may say."""
        return ", ".join(f"{count} {kind} (first at row {self.first_rows[kind]})"
                         for kind, count in self.counts.items())


def scan_table(table: TextTable, phone_region: str, scan_labels: bool = False) -> TableScan:
    """Scan a table's texts (and its labels, when they are text too: an instruction pair's responses)."""
    scanner = Scanner(phone_region)
    texts = scan_texts(table.texts, scanner, str(table.source))
    labels = scan_texts(table.labels, scanner, str(table.source)) if scan_labels and table.labels is not None else None
    counts = Counter(texts.counts) + Counter(labels.counts if labels else {})
    first_rows = {kind: min(scan.first_rows[kind] for scan in (texts, labels) if scan and kind in scan.first_rows)
                  for kind in counts}
    redacted = make_table(table.role, table.source, texts.redacted, labels.redacted if labels else table.labels,
                          table.schema)
    return TableScan(str(table.source), dict(sorted(counts.items())), first_rows, redacted if counts else table)
