"""Seeded generators of personal data for `bench/data_risks.py`: each makes an identifier that passes its type's
check (a real-looking value no one owns: random digits, fixed fictional domains) and a look-alike that fails it,
where the type has a check. Nothing here is anyone's data."""

from __future__ import annotations

import ipaddress
import random
import string
from collections.abc import Callable
from datetime import date, timedelta

import phonenumbers

from tasks.pii import cn_id_valid, cn_uscc_valid, iban_valid, luhn_valid

USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
CN_REGIONS = ("110105", "310115", "440305", "510104", "320102", "330106", "420102", "610103")
NAMES = ("jane.doe", "li.wei", "m.garcia", "a_okafor", "chen-jing", "tom+news", "k.nakamura", "support.team")
DOMAINS = ("example.org", "example.com", "mail.example.cn", "corp.example.net", "uni.example.edu")
PHONE_FORMATS = (phonenumbers.PhoneNumberFormat.NATIONAL, phonenumbers.PhoneNumberFormat.INTERNATIONAL,
                 phonenumbers.PhoneNumberFormat.E164)
PHONE_REGIONS = ("US", "GB", "DE", "FR", "IN", "AU", "BR", "JP")
IBAN_LAYOUTS = {"DE": 18, "GB": 18, "FR": 23, "ES": 20, "NL": 14, "IT": 23}  # digits/letters after the check


def email(rng: random.Random) -> str:
    return f"{rng.choice(NAMES)}{rng.randint(1, 99)}@{rng.choice(DOMAINS)}"


def phone(rng: random.Random) -> str:
    """A number valid in its region's plan, written in a national (US only: the scanner's default region) or an
    international form."""
    while True:
        region = rng.choice(PHONE_REGIONS)
        example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
        digits = str(example.national_number)
        keep = max(2, len(digits) - 6)
        candidate = digits[:keep] + "".join(rng.choice(string.digits) for _ in digits[keep:])
        number = phonenumbers.parse(candidate, region)
        if phonenumbers.is_valid_number(number):
            form = rng.choice(PHONE_FORMATS if region == "US" else PHONE_FORMATS[1:])
            return phonenumbers.format_number(number, form)


def card(rng: random.Random) -> str:
    prefix = rng.choice(("4", "51", "52", "55", "37", "6011"))
    length = 15 if prefix == "37" else 16
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    number = next(body + check for check in string.digits if luhn_valid(body + check))
    return " ".join(number[i : i + 4] for i in range(0, len(number), 4)) if rng.random() < 0.5 else number


def iban(rng: random.Random) -> str:
    country = rng.choice(sorted(IBAN_LAYOUTS))
    bban = "".join(rng.choice(string.digits) for _ in range(IBAN_LAYOUTS[country]))
    if country == "GB":
        bban = "".join(rng.choice(string.ascii_uppercase) for _ in range(4)) + bban[4:]
    number = next(f"{country}{check:02d}{bban}" for check in range(2, 99) if iban_valid(f"{country}{check:02d}{bban}"))
    return " ".join(number[i : i + 4] for i in range(0, len(number), 4)) if rng.random() < 0.5 else number


def ip(rng: random.Random) -> str:
    if rng.random() < 0.7:
        return str(ipaddress.IPv4Address(rng.randint(0x0B000000, 0xDF000000)))
    return str(ipaddress.IPv6Address(rng.getrandbits(128) | (0x2001 << 112)))


def cn_id(rng: random.Random) -> str:
    born = date(1950, 1, 1) + timedelta(days=rng.randint(0, 365 * 55))
    body = f"{rng.choice(CN_REGIONS)}{born:%Y%m%d}{rng.randint(0, 999):03d}"
    return next(body + check for check in "0123456789X" if cn_id_valid(body + check))


def cn_mobile(rng: random.Random) -> str:
    number = f"1{rng.choice('3456789')}{rng.randint(0, 999_999_999):09d}"
    spaced, dashed = f"+86 {number[:3]} {number[3:7]} {number[7:]}", f"{number[:3]}-{number[3:7]}-{number[7:]}"
    return rng.choice((number, spaced, dashed))


def cn_uscc(rng: random.Random) -> str:
    body = "91" + f"{rng.choice(CN_REGIONS)}" + "".join(rng.choice(USCC_CHARS) for _ in range(9))
    return next(body + check for check in USCC_CHARS if cn_uscc_valid(body + check))


GENERATORS: dict[str, Callable[[random.Random], str]] = {
    "EMAIL": email, "PHONE": phone, "CARD": card, "IBAN": iban, "IP": ip, "CN_ID": cn_id, "CN_MOBILE": cn_mobile,
    "CN_USCC": cn_uscc,
}
CHECKED = ("CARD", "IBAN", "CN_ID", "CN_USCC")  # the types whose last character is a check: look-alikes exist


def look_alike(value: str) -> str:
    """The value with its check character changed: the same shape, failing the check."""
    last = value[-1]
    pool = string.digits if last.isdigit() else USCC_CHARS
    return value[:-1] + next(c for c in pool if c != last)


def embedded(sentence: str, value: str, rng: random.Random) -> str:
    """`value` put between two words of a real sentence, as people write it: after a word, spaced."""
    words = sentence.split()
    position = rng.randint(0, len(words))
    return " ".join([*words[:position], value, *words[position:]])
