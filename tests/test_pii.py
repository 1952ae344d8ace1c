"""The personal-data recognizers: each finds a checksum-valid identifier inside real-looking text, leaves its
invalid-checksum look-alike alone, and redaction replaces the span with its type."""

from __future__ import annotations

import pytest

from tasks.pii import Scanner, cn_id_valid, cn_uscc_valid, iban_valid, luhn_valid, scan_texts

USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"


def with_cn_id_check(first17: str) -> str:
    total = sum(int(digit) * (2 ** (17 - position) % 11) for position, digit in enumerate(first17))
    return first17 + "10X98765432"[total % 11]


def with_uscc_check(first17: str) -> str:
    total = sum(USCC_CHARS.index(c) * pow(3, position, 31) for position, c in enumerate(first17))
    return first17 + USCC_CHARS[(31 - total % 31) % 31]


def with_luhn_check(body: str) -> str:
    for check in "0123456789":
        if luhn_valid(body + check):
            return body + check
    raise AssertionError("no Luhn digit")


def flip_last(value: str) -> str:
    """The same identifier with a wrong final character: a look-alike that fails its check."""
    last = value[-1]
    return value[:-1] + ("1" if last != "1" else "2")


CN_ID = with_cn_id_check("11010519491231002")
CN_USCC = with_uscc_check("91350100M000100Y4")
CARD = with_luhn_check("411111111111111")
IBAN = "GB82 WEST 1234 5698 7654 32"  # the ISO 13616 example

VALID = [
    ("EMAIL", "write to zw@example.cn today", "zw@example.cn"),
    ("EMAIL", "邮箱zw@example.cn，谢谢", "zw@example.cn"),
    ("CN_ID", f"身份证号{CN_ID}。", CN_ID),
    ("CN_USCC", f"统一社会信用代码 {CN_USCC}", CN_USCC),
    ("CN_MOBILE", "请拨打13812345678联系", "13812345678"),
    ("CN_MOBILE", "call +86 138 1234 5678 now", "+86 138 1234 5678"),
    ("CARD", f"card {CARD} expires", CARD),
    ("IBAN", f"pay to {IBAN} please", IBAN),
    ("IBAN", "the VAX's ES95 5022 5442 6933 3632 6993 C-compiler", "ES95 5022 5442 6933 3632 6993"),
    ("IP", "the host 192.168.10.23 is down", "192.168.10.23"),
    ("IP", "ping 2001:db8:85a3::8a2e:370:7334 again", "2001:db8:85a3::8a2e:370:7334"),
    ("PHONE", "call (202) 555-0143 or not", "(202) 555-0143"),
    ("PHONE", "ring +44 20 7946 0958 in London", "+44 20 7946 0958"),
]


@pytest.mark.parametrize(("kind", "text", "value"), VALID)
def test_a_valid_identifier_is_found_and_redacted(kind: str, text: str, value: str) -> None:
    scanner = Scanner()
    findings = scanner.find(text)
    assert [(f.kind, text[f.start : f.end]) for f in findings] == [(kind, value)]
    redacted, _ = scanner.redact(text)
    assert redacted == text.replace(value, f"<{kind}>")


@pytest.mark.parametrize("text", [
    f"身份证号{flip_last(CN_ID)}。",
    f"代码 {flip_last(CN_USCC)}",
    f"card {flip_last(CARD)} expires",
    f"pay to {flip_last(IBAN)} please",
    "version 1.2.3.4567 and 300.1.1.1",
    "std::vector and a::b::c in C++",
    "the year 1999 had 365 days and 8760 hours",
    "ISBN 978-0-306-40615-7 is a book",
    "Section 2.4.3.5 (AWNS) and revision 1.17.2.7",
    "Decimal('31.01875') and 2.8333333333...",
])
def test_a_look_alike_is_left_alone(text: str) -> None:
    assert Scanner().find(text) == []


def test_checksums_reject_a_changed_character() -> None:
    assert cn_id_valid(CN_ID) and not cn_id_valid(flip_last(CN_ID))
    assert cn_uscc_valid(CN_USCC) and not cn_uscc_valid(flip_last(CN_USCC))
    assert iban_valid(IBAN) and not iban_valid(flip_last(IBAN))
    assert not cn_id_valid("110105194902300021")  # 30 February


def test_a_scan_counts_types_and_first_rows_never_values() -> None:
    scan = scan_texts(["nothing here", None, "mail a@b.org and c@d.org", f"id {CN_ID}"], Scanner())
    assert scan.counts == {"CN_ID": 1, "EMAIL": 2}
    assert scan.first_rows == {"EMAIL": 3, "CN_ID": 4}
    assert scan.redacted == ["nothing here", None, "mail <EMAIL> and <EMAIL>", "id <CN_ID>"]
