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

from core.vocabulary import PiiTypeName
from tasks.data import TextTable, make_table

# Longest first within a type's alternatives; the order of RECOGNIZERS settles overlaps between types.
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,24}"
                    r"(?![A-Za-z0-9\-])")
_CN_ID = re.compile(r"(?<![0-9A-Za-z])[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]"
                    r"(?![0-9A-Za-z])")
_USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_CN_USCC = re.compile(rf"(?<![0-9A-Za-z])[{_USCC_CHARS}]{{2}}\d{{6}}[{_USCC_CHARS}]{{10}}(?![0-9A-Za-z])")
_CN_MOBILE = re.compile(r"(?<![\d+])(?:\+?86[ \-]?)?1[3-9]\d(?:[ \-]?\d{4}){2}(?!\d)")
_CARD = re.compile(r"(?<![\d\-])[3-6]\d{3}(?:[ \-]?\d{3,4}){2,4}(?![\d\-])")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])")
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


def iban_valid(value: str) -> bool:
    """ISO 13616: the country and check digits moved to the end, letters as 10..35, the number mod 97 is 1."""
    compact = value.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(character, 36)) for character in rearranged)) % 97 == 1


def cn_id_valid(value: str) -> bool:
    """GB 11643-1999: a real birth date (characters 7-14) and the ISO 7064 MOD 11-2 check character."""
    try:
        date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    total = sum(int(digit) * (2 ** (17 - position) % 11) for position, digit in enumerate(value[:17]))
    return "10X98765432"[total % 11] == value[17].upper()


def cn_uscc_valid(value: str) -> bool:
    """GB 32100-2015: the 18th character checks the first 17 (weights 3^i mod 31 over the code's 31 characters)."""
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


def phone_candidates(region: str) -> Callable[[str], Iterable[tuple[int, int]]]:
    """Numbers libphonenumber finds valid: international (+...) anywhere, national ones in `region`'s forms."""
    import phonenumbers

    def find(text: str) -> Iterable[tuple[int, int]]:
        if sum(character.isdigit() for character in text) < _MIN_PHONE_DIGITS:
            return []
        matcher = phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID)
        return [(match.start, match.end) for match in matcher]

    return find


def recognizers(phone_region: str = "US") -> list[Recognizer]:
    """Every recognizer, in the order that settles overlaps (the more specific identifier first)."""
    return [
        Recognizer("EMAIL", _matches(_EMAIL)),
        Recognizer("CN_ID", _matches(_CN_ID), cn_id_valid),
        Recognizer("CN_USCC", _matches(_CN_USCC), cn_uscc_valid),
        Recognizer("IBAN", _matches(_IBAN), iban_valid),
        Recognizer("CARD", _matches(_CARD), luhn_valid),
        Recognizer("CN_MOBILE", _matches(_CN_MOBILE), cn_mobile_valid),
        Recognizer("IP", _matches(_IPV4), ip_valid),
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


def scan_texts(texts: Iterable[str | None], scanner: Scanner) -> TextScan:
    counts: Counter[str] = Counter()
    first_rows: dict[str, int] = {}
    redacted: list[str | None] = []
    for row, text in enumerate(texts, start=1):
        if not text:
            redacted.append(text)
            continue
        clean, findings = scanner.redact(text)
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
    texts = scan_texts(table.texts, scanner)
    labels = scan_texts(table.labels, scanner) if scan_labels and table.labels is not None else None
    counts = Counter(texts.counts) + Counter(labels.counts if labels else {})
    first_rows = {kind: min(scan.first_rows[kind] for scan in (texts, labels) if scan and kind in scan.first_rows)
                  for kind in counts}
    redacted = make_table(table.role, table.source, texts.redacted, labels.redacted if labels else table.labels,
                          table.schema)
    return TableScan(str(table.source), dict(sorted(counts.items())), first_rows, redacted if counts else table)
