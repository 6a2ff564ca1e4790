"""Order numbers and postcodes in the forms customers type and say them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from crm_store.errors import InvalidInput
from crm_store.services.references import (
    NLU_REGEX,
    find_order_number,
    find_postcode,
    normalize_order_number,
    normalize_postcode,
    spoken_digits,
)

ORDER_FORMS = [
    ("A10047", "A10047"),
    ("a10047", "A10047"),
    ("A 10047", "A10047"),
    ("a-10047", "A10047"),
    ("#10047", "A10047"),
    ("#A10047", "A10047"),
    ("10047", "A10047"),
    ("order no. 10047", "A10047"),
    ("order nr 10047", "A10047"),
    ("order number: 10047", "A10047"),
    ("where is my order 15640", "A15640"),
    ("status of a16135 pls", "A16135"),
    ("my order is A.10047 thanks", "A10047"),
    ("A:10047", "A10047"),
    ("100 47", "A10047"),
    ("one zero zero four seven", "A10047"),
    ("a one zero zero four seven", "A10047"),
    ("it's one double zero four seven", "A10047"),
    ("order one oh oh four seven please", "A10047"),
    ("A1 0 0 4 7", "A10047"),
    ("I want to return order A10047, it doesn't fit", "A10047"),
    ("A10047 5500 LE", "A10047"),
    ("5500 LE and the order is 10047", "A10047"),
]

NOT_ORDERS = [
    "",
    "   ",
    "where is my order",
    "my postcode is 5500 LE",
    "1000",
    "123456",
    "call me on +31 6 12345678",
    "020 12345",
    "A123456",
    "B10047X",
    "it cost 12.50",
    "I have one question",
    "for two days",
]


@pytest.mark.parametrize(("text", "expected"), ORDER_FORMS)
def test_order_numbers_in_every_form(text: str, expected: str) -> None:
    assert find_order_number(text) == expected


@pytest.mark.parametrize("text", NOT_ORDERS)
def test_not_order_numbers(text: str) -> None:
    assert find_order_number(text) is None


@pytest.mark.parametrize("value", [None, 10047, {"x": 1}, ["A10047"], b"A10047"])
def test_order_number_of_other_types_is_none(value: object) -> None:
    assert find_order_number(value) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a-10047", "A10047"),
        (" #10047 ", "A10047"),
        ("10047", "A10047"),
        ("A 10047", "A10047"),
        ("b123", "B123"),
        ("A10001", "A10001"),
    ],
)
def test_normalize_order_number(value: str, expected: str) -> None:
    assert normalize_order_number(value) == expected


@pytest.mark.parametrize(
    "value", ["", "  ", "A1004!7", "x" * 33, "order 10047 or 10048"]
)
def test_normalize_order_number_rejects(value: str) -> None:
    with pytest.raises(InvalidInput, match="order number"):
        normalize_order_number(value)


POSTCODE_FORMS = [
    ("5500 LE", "5500 LE"),
    ("5500le", "5500 LE"),
    ("5500 le", "5500 LE"),
    ("5500-LE", "5500 LE"),
    ("5500 L E", "5500 LE"),
    ("postcode 1000", "1000"),
    ("it's 1000 in Brussels", "1000"),
    ("1000 is my postcode", "1000"),
    ("my postcode is 3012 AB thanks", "3012 AB"),
    ("five five zero zero L E", "5500 LE"),
    ("1234 AS", "1234 AS"),
    ("1000 at the moment", "1000"),
    ("A10047 5500 LE", "5500 LE"),
    ("a10002 8325rf", "8325 RF"),
]


@pytest.mark.parametrize(("text", "expected"), POSTCODE_FORMS)
def test_postcodes_in_every_form(text: str, expected: str) -> None:
    assert find_postcode(text) == expected


@pytest.mark.parametrize(
    "text", ["", "A10047", "10047", "0123 AB", "+31 6 12345678", "no idea", None, 5500]
)
def test_not_postcodes(text: object) -> None:
    assert find_postcode(text) is None


def test_normalize_postcode_whole_value_only() -> None:
    assert normalize_postcode("5500le") == "5500 LE"
    assert normalize_postcode(" 1000 ") == "1000"
    for bad in ["", "55", "5500 LE and more", "A10047"]:
        with pytest.raises(InvalidInput, match="postcode"):
            normalize_postcode(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("one zero zero four seven", "10047"),
        ("double four", "44"),
        ("I have one question", "I have one question"),
        ("oh no", "oh no"),
        ("zero", "zero"),
        ("call one two three now", "call 123 now"),
    ],
)
def test_spoken_digits(text: str, expected: str) -> None:
    assert spoken_digits(text) == expected


def test_nlu_regex_features_are_the_store_patterns() -> None:
    """data/nlu holds exactly the patterns of NLU_REGEX (the one definition)."""
    root = Path(__file__).resolve().parents[2]
    found: dict[str, list[str]] = {}
    for path in sorted((root / "data" / "nlu").glob("*.yml")):
        for item in yaml.safe_load(path.read_text())["nlu"]:
            if "regex" in item and item["regex"] in NLU_REGEX:
                found[item["regex"]] = [
                    line[2:].strip()
                    for line in item["examples"].splitlines()
                    if line.strip()
                ]
    assert found == NLU_REGEX


TYPED_FORMS = [text for text, _ in ORDER_FORMS if re.search(r"\d{5}", text)]


@pytest.mark.parametrize("text", TYPED_FORMS)
def test_nlu_order_regex_sees_typed_forms(text: str) -> None:
    """The featurizer fires on every form typed with the 5 digits together."""
    assert any(re.search(p, text, re.I) for p in NLU_REGEX["order_number"])
