"""What callers say and press, as the bot reads it (``channels.speech``).

Table-driven: each row is a Twilio ``SpeechResult`` (or ``Digits``) and the text
the bot must get. The canonical forms are checked against the services that
own them (``references``, ``tickets``), so the two cannot drift apart.
"""

from __future__ import annotations

import time

import pytest

from channels.speech import (
    EXPECT_ORDER_NUMBER,
    digits_to_text,
    normalize_utterance,
)
from crm_store.services.references import (
    find_order_number,
    find_postcode,
    normalize_order_number,
    normalize_postcode,
)
from crm_store.services.tickets import normalize_ticket_number

ORDER_NUMBERS = [
    ("a one zero zero four seven", "A10047"),
    ("A one zero zero four seven", "A10047"),
    ("A 1 0 0 4 7", "A10047"),
    ("a 1-0-0-4-7", "A10047"),
    ("a ten oh forty seven", "A10047"),
    ("a ten zero forty seven", "A10047"),
    ("a one double oh four seven", "A10047"),
    ("order a one double oh four seven", "order A10047"),
    ("a ten thousand forty seven", "A10047"),
    ("a ten thousand and forty seven", "A10047"),
    ("ay one zero zero four seven", "A10047"),
    ("alpha one zero zero four seven", "A10047"),
    ("A10047", "A10047"),
    ("a10047", "A10047"),
    ("A-10047", "A10047"),
    ("A. 10047.", "A10047."),
    ("a 100 47", "A10047"),
    ("A 10,047", "A10047"),
    ("my order is a one zero zero four seven", "my order is A10047"),
    ("My order number is A. 1 0 0 4 7, thanks.", "My order number is A10047, thanks."),
    ("where is order a one two three four five", "where is order A12345"),
    ("a one one one one one", "A11111"),
    ("a triple one double one", "A11111"),
]

NOT_ORDER_NUMBERS = [
    # "hey" sounds like "A" but is not the letter: the digits stay digits.
    ("hey one zero zero four seven", "hey 10047"),
    ("one zero zero four seven", "10047"),
    ("ten thousand forty seven", "10047"),
    # Six digits after "a" are no order number.
    ("a one zero zero four seven five", "a 100475"),
    ("a 100475", "a 100475"),
    # "a" glued to a word is no letter.
    ("banana one zero zero four seven", "banana 10047"),
    # Four digits are not five.
    ("a one two three four", "a 1234"),
]

POSTCODES = [
    ("fifty-five hundred L E", "5500 LE"),
    ("fifty five hundred L E", "5500 LE"),
    ("fifty-five hundred el ee", "5500 LE"),
    ("five five zero zero l e", "5500 LE"),
    ("five five zero zero L.E.", "5500 LE."),
    ("5500 el ee", "5500 LE"),
    ("5500 L E", "5500 LE"),
    ("5500 LE", "5500 LE"),
    ("5500 le", "5500 LE"),
    ("5500le", "5500 LE"),
    ("five five zero zero lima echo", "5500 LE"),
    ("1234 double u x", "1234 WX"),
    ("one two three four ay bee", "1234 AB"),
    ("55 hundred L E", "5500 LE"),
    ("my postcode is fifty-five hundred L E", "my postcode is 5500 LE"),
    (
        "postcode fifty five hundred el ee and order a one zero zero four seven",
        "postcode 5500 LE and order A10047",
    ),
    ("nineteen hundred ninety nine bee see", "1999 BC"),
    ("5500 L E a one zero zero four seven", "5500 LE A10047"),
    ("5500 L. E. A. 10047", "5500 LE. A10047"),
]

NOT_POSTCODES = [
    # Letters Dutch postcodes never use (I, O, Q, U, Y) stay as said.
    ("5500 eye oh", "5500 eye oh"),
    ("5500 see you", "5500 see you"),
    # A third letter: the caller spells something else.
    ("1234 a b c", "1234 a b c"),
    # A lower-case word that is not the last one is left to the bot.
    ("postcode 5500 le please", "postcode 5500 le please"),
    ("I was born in 1990 as well", "I was born in 1990 as well"),
    # Part of a longer number.
    ("+31 1234 a b", "+31 1234 a b"),
    ("020 1234 ab", "020 1234 ab"),
]

TICKETS = [
    ("ticket t a b c two three four", "ticket T-ABC234"),
    ("ticket t dash a b c 2 3 4", "ticket T-ABC234"),
    ("tee a b c two three four", "T-ABC234"),
    ("tango alpha bravo charlie two three four", "T-ABC234"),
    ("T ABC 234", "T-ABC234"),
    ("T-ABC234", "T-ABC234"),
    ("t-abc234", "T-ABC234"),
    ("my ticket is t x nine k two m seven", "my ticket is T-X9K2M7"),
]

NOT_TICKETS = [
    ("the tea for two", "the tea for two"),
    ("don't know", "don't know"),
    # No digit: not an issued ticket number.
    ("t a b c d e f", "t a b c d e f"),
    # O and 1 are not in the ticket alphabet.
    ("t a b c one two three", "t a b c one two three"),
    # Seven symbols.
    ("t a b c two three four five", "t a b c 2345"),
]

LEFT_ALONE = [
    ("yeah", "yeah"),
    ("yep", "yep"),
    ("nope", "nope"),
    ("Yes, please.", "Yes, please."),
    ("no thanks", "no thanks"),
    ("I want to talk to a person", "I want to talk to a person"),
    ("I have two items", "I have two items"),
    ("one hundred", "one hundred"),
    ("I want to return one item", "I want to return one item"),
    ("call me at five to six", "call me at five to six"),
    ("one two", "one two"),
    ("oh no", "oh no"),
    ("oh, one more thing", "oh, one more thing"),
    ("twenty", "twenty"),
    ("", ""),
    ("   ", ""),
    ("Straße één twee drie vier", "Straße één twee drie vier"),
]

WHITESPACE_AND_NUMBERS = [
    ("  my   order\tis  a one zero zero four seven  ", "my order is A10047"),
    ("twenty twenty four", "2024"),
    ("double four double four", "4444"),
    ("one two three four five six seven eight", "12345678"),
    ("oh one two three four five", "oh 12345"),
    ("10,047", "10047"),
    ("1,234,567", "1234567"),
    ("1,2,3", "1,2,3"),
]


@pytest.mark.parametrize(("said", "expected"), ORDER_NUMBERS)
def test_spoken_order_numbers_become_the_stored_form(said: str, expected: str) -> None:
    result = normalize_utterance(said)
    assert result == expected
    found = find_order_number(result)
    assert found is not None
    assert found == normalize_order_number(found)  # canonical, as stored
    assert found in result


@pytest.mark.parametrize(("said", "expected"), NOT_ORDER_NUMBERS)
def test_without_the_letter_there_is_no_order_prefix(said: str, expected: str) -> None:
    result = normalize_utterance(said)
    assert result == expected
    assert "A1" not in result


@pytest.mark.parametrize(("said", "expected"), POSTCODES)
def test_spoken_postcodes_become_canonical(said: str, expected: str) -> None:
    result = normalize_utterance(said)
    assert result == expected
    postcode = find_postcode(result)
    assert postcode is not None
    assert postcode == normalize_postcode(postcode)
    assert postcode in result


@pytest.mark.parametrize(("said", "expected"), NOT_POSTCODES)
def test_things_that_are_no_postcode_stay_as_said(said: str, expected: str) -> None:
    assert normalize_utterance(said) == expected


@pytest.mark.parametrize(("said", "expected"), TICKETS)
def test_spelt_ticket_numbers_become_the_stored_form(said: str, expected: str) -> None:
    result = normalize_utterance(said)
    assert result == expected
    number = result.split()[-1]
    assert number == normalize_ticket_number(number)


@pytest.mark.parametrize(("said", "expected"), NOT_TICKETS)
def test_things_that_are_no_ticket_number_stay(said: str, expected: str) -> None:
    assert normalize_utterance(said) == expected


@pytest.mark.parametrize(("said", "expected"), LEFT_ALONE)
def test_yes_no_and_ordinary_sentences_are_left_for_the_nlu(
    said: str, expected: str
) -> None:
    assert normalize_utterance(said) == expected


@pytest.mark.parametrize(("said", "expected"), WHITESPACE_AND_NUMBERS)
def test_number_runs_and_whitespace(said: str, expected: str) -> None:
    assert normalize_utterance(said) == expected


@pytest.mark.parametrize("said", [row[1] for row in ORDER_NUMBERS + POSTCODES])
def test_normalizing_twice_changes_nothing(said: str) -> None:
    assert normalize_utterance(said) == said


def test_a_very_long_utterance_keeps_every_number() -> None:
    said = "a one zero zero four seven and " * 2000
    result = normalize_utterance(said)
    assert result.count("A10047") == 2000


@pytest.mark.parametrize(
    "said", ["1234 ab " * 5000, "t a b c " * 5000, "one " * 20000, "a " * 20000]
)
def test_adversarial_input_takes_no_quadratic_time(said: str) -> None:
    started = time.perf_counter()
    normalize_utterance(said)
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize("bad", [None, 10047, b"a one", ["a", "one"]])
def test_an_utterance_that_is_not_text_is_a_type_error(bad: object) -> None:
    with pytest.raises(TypeError):
        normalize_utterance(bad)  # type: ignore[arg-type]


DIGITS = [
    ("1", None, "1"),
    ("2", EXPECT_ORDER_NUMBER, "2"),
    ("10047", None, "10047"),
    ("10047", EXPECT_ORDER_NUMBER, "A10047"),
    ("10047#", EXPECT_ORDER_NUMBER, "A10047"),
    (" 10047 ", EXPECT_ORDER_NUMBER, "A10047"),
    ("*10047", EXPECT_ORDER_NUMBER, "A10047"),
    ("1004", EXPECT_ORDER_NUMBER, "1004"),
    ("100475", EXPECT_ORDER_NUMBER, "100475"),
    ("5500", None, "5500"),
    ("#", None, ""),
    ("", EXPECT_ORDER_NUMBER, ""),
]


@pytest.mark.parametrize(("digits", "expecting", "expected"), DIGITS)
def test_keypad_digits(digits: str, expecting: str | None, expected: str) -> None:
    assert digits_to_text(digits, expecting=expecting) == expected


@pytest.mark.parametrize("digits", ["12a", "hangup", "1 2", "١٢٣٤٥", "+31"])
def test_characters_that_are_no_keypad_key_are_refused(digits: str) -> None:
    with pytest.raises(ValueError, match="keypad"):
        digits_to_text(digits)


def test_an_unknown_expectation_is_refused() -> None:
    with pytest.raises(ValueError, match="expecting"):
        digits_to_text("10047", expecting="postcode")


def test_digits_that_are_not_text_are_a_type_error() -> None:
    with pytest.raises(TypeError):
        digits_to_text(10047)  # type: ignore[arg-type]
