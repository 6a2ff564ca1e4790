"""What a caller says or presses, as the bot reads typed text (voice channel).

``normalize_utterance`` turns Twilio's ``SpeechResult`` into the forms the NLU
and the services know (``crm_store.services.references``,
``crm_store.services.tickets``); the rest of the sentence is kept, yes/no words
("yeah", "nope") are left to the NLU:

- **Numbers.** A run of number words and single digits becomes digits when it
  makes at least ``MIN_RUN_DIGITS`` digits: "one zero zero four seven",
  "1 0 0 4 7", "ten oh forty seven", "one double oh four seven" -> ``10047``;
  "fifty-five hundred" -> ``5500``; "ten thousand forty seven" -> ``10047``.
  "oh"/"o" count only inside a run. Shorter runs ("two items", "one hundred")
  stay words. Digit groups with thousands commas ("10,047") lose the commas.
- **Order numbers.** The letter ``a`` (also "ay", "alpha") right before five
  digits makes an order number: "my order is a one zero zero four seven" ->
  "my order is A10047". Five digits without the letter stay digits ("hey one
  zero zero four seven" -> "hey 10047"): the bot reads bare digits itself.
- **Postcodes.** Four digits followed by two spelt letters: single letters,
  letter names ("el" L, "ee" E, "double u" W, ...) or the NATO alphabet ("lima
  echo"): "fifty-five hundred L E", "5500 el ee" -> ``5500 LE``; a two-letter
  word right after counts when upper case or last ("5500 LE").
- **Ticket numbers.** "t"/"tee"/"tango", an optional "dash", then six letters
  and digits of the ticket alphabet with at least one digit: "ticket t a b c
  two three four" -> "ticket T-ABC234".

``digits_to_text`` reads keypad digits (``Digits``): a menu choice stays the
digit; five digits when an order number is expected become ``A`` + digits.
"""

from __future__ import annotations

import re

from crm_store.errors import InvalidInput
from crm_store.services.numbering import ALPHABET as TICKET_ALPHABET
from crm_store.services.numbering import LENGTH as TICKET_CODE_LENGTH
from crm_store.services.references import (
    ORDER_DIGITS,
    ORDER_PREFIX,
    normalize_postcode,
)
from crm_store.services.tickets import normalize_ticket_number

__all__ = [
    "EXPECT_ORDER_NUMBER",
    "MIN_RUN_DIGITS",
    "digits_to_text",
    "normalize_utterance",
]

MIN_RUN_DIGITS = 4  # postcodes have 4, order numbers 5: shorter runs stay words
EXPECT_ORDER_NUMBER = "order_number"
EXPECTATIONS = (None, EXPECT_ORDER_NUMBER)

UNITS = {
    "zero": 0,
    "oh": 0,
    "o": 0,
    "nil": 0,
    "nought": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
}
AMBIGUOUS = frozenset({"oh", "o", "nil"})  # digits only inside a run
TEENS = {
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
}
TENS = {
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
}
REPEATS = {"double": 2, "triple": 3}
LETTER_NAMES = {
    "ay": "A",
    "bee": "B",
    "see": "C",
    "sea": "C",
    "cee": "C",
    "dee": "D",
    "ee": "E",
    "ef": "F",
    "eff": "F",
    "gee": "G",
    "aitch": "H",
    "haitch": "H",
    "jay": "J",
    "kay": "K",
    "el": "L",
    "ell": "L",
    "em": "M",
    "en": "N",
    "pee": "P",
    "pea": "P",
    "cue": "Q",
    "queue": "Q",
    "ar": "R",
    "are": "R",
    "es": "S",
    "ess": "S",
    "tee": "T",
    "tea": "T",
    "vee": "V",
    "ex": "X",
    "why": "Y",
    "wye": "Y",
    "zed": "Z",
    "zee": "Z",
}
NATO = {
    "alpha": "A",
    "alfa": "A",
    "bravo": "B",
    "charlie": "C",
    "delta": "D",
    "echo": "E",
    "foxtrot": "F",
    "golf": "G",
    "hotel": "H",
    "india": "I",
    "juliet": "J",
    "juliett": "J",
    "kilo": "K",
    "lima": "L",
    "mike": "M",
    "november": "N",
    "oscar": "O",
    "papa": "P",
    "quebec": "Q",
    "romeo": "R",
    "sierra": "S",
    "tango": "T",
    "uniform": "U",
    "victor": "V",
    "whiskey": "W",
    "whisky": "W",
    "xray": "X",
    "yankee": "Y",
    "zulu": "Z",
}
DOUBLE_U = frozenset({"u", "you", "yu"})
TICKET_WORDS = frozenset({"t", "tee", "tea", "tango"})
DASH_WORDS = frozenset({"dash", "hyphen"})

_TOKEN = re.compile(r"[^\W\d_]+|[0-9]+|\s+|.", re.DOTALL)
_THOUSANDS = re.compile(r"(?<![\d,])\d{1,3}(?:,\d{3})+(?!,?\d)")
# The letter (spoken "a", "ay", "alpha") before five digits, alone or grouped.
_ORDER_SPOKEN = re.compile(
    rf"(?<![^\W_])(?:a|ay|alpha)[ \t\-.:#,]*(\d(?:[ \-]?\d){{{ORDER_DIGITS - 1}}})"
    r"(?![ \-]?\d)(?![^\W\d_])",
    re.IGNORECASE,
)
_SPACES = re.compile(r"\s+")
_DTMF = re.compile(r"[0-9*#]*")


def normalize_utterance(text: str) -> str:
    """Return what a caller said in the forms the bot reads (module docstring).

    "my order is a one zero zero four seven" -> "my order is A10047",
    "fifty-five hundred L E" -> "5500 LE". Whitespace is collapsed; everything
    else in the sentence is kept as said.

    Raises:
        TypeError: ``text`` is not a string.
    """
    if not isinstance(text, str):
        raise TypeError("the utterance must be a string")
    text = _THOUSANDS.sub(lambda m: m.group().replace(",", ""), text)
    tokens = _TOKEN.findall(text)
    tokens = _tickets(tokens)
    tokens = _number_runs(tokens)
    tokens = _postcodes(tokens)
    joined = "".join(tokens)
    joined = _ORDER_SPOKEN.sub(
        lambda m: ORDER_PREFIX + re.sub(r"\D", "", m.group(1)), joined
    )
    return _SPACES.sub(" ", joined).strip()


def digits_to_text(digits: str, *, expecting: str | None = None) -> str:
    """Return keypad digits (Twilio's ``Digits``) as text for the bot.

    ``*`` and ``#`` are dropped. A menu choice ("2") stays the digit; with
    ``expecting=EXPECT_ORDER_NUMBER`` five digits become an order number
    (``10047`` -> ``A10047``). "" when no digit was pressed.

    Raises:
        TypeError: ``digits`` is not a string.
        ValueError: a character that is no keypad key, or an unknown ``expecting``.
    """
    if not isinstance(digits, str):
        raise TypeError("the digits must be a string")
    if expecting not in EXPECTATIONS:
        raise ValueError(f"expecting must be one of {EXPECTATIONS}")
    pressed = digits.strip()
    if not _DTMF.fullmatch(pressed):
        raise ValueError("keypad digits are 0-9, * and #")
    pressed = pressed.replace("*", "").replace("#", "")
    if expecting == EXPECT_ORDER_NUMBER and len(pressed) == ORDER_DIGITS:
        return ORDER_PREFIX + pressed
    return pressed


# --- tokens -------------------------------------------------------------------


def _low(tokens: list[str], index: int) -> str:
    return tokens[index].lower() if index < len(tokens) else ""


def _skip(tokens: list[str], index: int, *, dash: bool = True) -> int:
    """The index of the next token after whitespace (and one ``-`` if ``dash``)."""
    while index < len(tokens) and tokens[index].isspace():
        index += 1
    if dash and index < len(tokens) and tokens[index] == "-":
        index += 1
        while index < len(tokens) and tokens[index].isspace():
            index += 1
    return index


def _single_digit(token: str) -> bool:
    return len(token) == 1 and token.isdigit()


# --- numbers ------------------------------------------------------------------


def _unit(token: str, *, nonzero: bool = False) -> int | None:
    """The value of a digit word or a single digit (1-9 only if ``nonzero``)."""
    word = token.lower()
    if word in UNITS:
        value = UNITS[word]
    elif _single_digit(token) and token.isascii():
        value = int(token)
    else:
        return None
    return None if nonzero and value == 0 else value


def _below_100(tokens: list[str], index: int) -> tuple[int, int] | None:
    """A value under 100 said in words ("forty seven", "twelve", "five")."""
    word = _low(tokens, index)
    if word in TEENS:
        return TEENS[word], index + 1
    if word in TENS:
        value, end = TENS[word], index + 1
        after = _skip(tokens, end)
        unit = _unit(tokens[after], nonzero=True) if after < len(tokens) else None
        if unit is not None and _low(tokens, after) not in AMBIGUOUS:
            return value + unit, after + 1
        return value, end
    if word in AMBIGUOUS:
        return None
    unit = _unit(tokens[index], nonzero=True) if index < len(tokens) else None
    return (unit, index + 1) if unit is not None else None


def _remainder(tokens: list[str], end: int) -> tuple[int, int]:
    """What follows a scale word ("hundred [and] five"): ``(value, end)``."""
    after = _skip(tokens, end)
    if _low(tokens, after) == "and":
        after = _skip(tokens, after + 1)
    found = _below_100(tokens, after)
    return found if found is not None else (0, end)


def _chunk(tokens: list[str], index: int) -> tuple[str, int] | None:
    """One spoken group of digits at ``index``: ``(digits, end)`` or None."""
    if index >= len(tokens):
        return None
    token, word = tokens[index], tokens[index].lower()
    if word in REPEATS:
        after = _skip(tokens, index + 1)
        unit = _unit(tokens[after]) if after < len(tokens) else None
        if unit is None:
            return None
        return str(unit) * REPEATS[word], after + 1
    after = _skip(tokens, index + 1)
    scaled = _low(tokens, after) in ("hundred", "thousand")
    if token.isdigit() and token.isascii() and (len(token) == 1 or scaled):
        if len(token) > 2:
            return None
        value, end = int(token), index + 1
    elif word in UNITS:
        value, end = UNITS[word], index + 1
    else:
        found = _below_100(tokens, index)
        if found is None:
            return None
        value, end = found
    if word in AMBIGUOUS or value == 0:
        return str(value), end
    after = _skip(tokens, end)
    if _low(tokens, after) == "hundred":
        extra, end = _remainder(tokens, after + 1)
        value = value * 100 + extra
        after = _skip(tokens, end)
    if _low(tokens, after) == "thousand" and value < 1000:
        value *= 1000
        end = after + 1
        hundreds = _chunk_hundreds(tokens, _skip_and(tokens, end))
        if hundreds is not None:
            extra, end = hundreds
            value += extra
    return str(value), end


def _skip_and(tokens: list[str], end: int) -> int:
    after = _skip(tokens, end)
    return _skip(tokens, after + 1) if _low(tokens, after) == "and" else after


def _chunk_hundreds(tokens: list[str], index: int) -> tuple[int, int] | None:
    """A value under 1000 after "thousand" ("five hundred and two", "forty")."""
    found = _below_100(tokens, index)
    if found is None:
        return None
    value, end = found
    after = _skip(tokens, end)
    if value < 10 and _low(tokens, after) == "hundred":
        extra, end = _remainder(tokens, after + 1)
        value = value * 100 + extra
    return value, end


def _starts_run(tokens: list[str], index: int) -> bool:
    word = tokens[index].lower()
    if word in AMBIGUOUS:
        return False
    if word in REPEATS:
        after = _skip(tokens, index + 1)
        return after < len(tokens) and _unit(tokens[after]) is not None
    return _chunk(tokens, index) is not None


def _read_run(tokens: list[str], start: int) -> tuple[str, int]:
    """The digits of the run at ``start`` and the index after its last token."""
    digits: list[str] = []
    index = end = start
    while True:
        chunk = _chunk(tokens, index)
        if chunk is None:
            break
        digits.append(chunk[0])
        end = chunk[1]
        index = _skip(tokens, end)
    return "".join(digits), end


def _number_runs(tokens: list[str]) -> list[str]:
    """Runs of number words and single digits -> digits (``MIN_RUN_DIGITS`` or more)."""
    out: list[str] = []
    index = 0
    while index < len(tokens):
        if not _starts_run(tokens, index):
            out.append(tokens[index])
            index += 1
            continue
        digits, end = _read_run(tokens, index)
        if len(digits) >= MIN_RUN_DIGITS:
            out.append(digits)
        else:
            out.extend(tokens[index:end])
        index = end
    return out


# --- letters --------------------------------------------------------------------


def _letter(tokens: list[str], index: int) -> tuple[str, int] | None:
    """One spelt letter at ``index``: a single letter, a letter name or NATO word."""
    if index >= len(tokens):
        return None
    token, word = tokens[index], tokens[index].lower()
    if len(token) == 1 and token.isascii() and token.isalpha():
        return token.upper(), index + 1
    if word in LETTER_NAMES:
        return LETTER_NAMES[word], index + 1
    if word in NATO:
        return NATO[word], index + 1
    if word == "double":
        after = _skip(tokens, index + 1, dash=False)
        if _low(tokens, after) in DOUBLE_U:
            return "W", after + 1
    return None


def _postcodes(tokens: list[str]) -> list[str]:
    """Four digits followed by two spelt letters -> a canonical postcode."""
    out: list[str] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        found = _postcode_at(tokens, index) if _postcode_digits(out, token) else None
        if found is None:
            out.append(token)
            index += 1
            continue
        postcode, end = found
        out.append(postcode)
        index = end
    return out


def _postcode_digits(before: list[str], token: str) -> bool:
    """Four ASCII digits not starting with 0 that do not continue another number."""
    if not (len(token) == 4 and token.isascii() and token.isdigit()):
        return False
    if token[0] == "0":
        return False
    previous = [t for t in before[-3:] if not t.isspace()]
    return not previous or not (previous[-1].isdigit() or previous[-1] == "+")


def _postcode_at(tokens: list[str], index: int) -> tuple[str, int] | None:
    digits = tokens[index]
    start = _skip(tokens, index + 1)
    first = _letter(tokens, start)
    if first is not None:
        second = _letter(tokens, _after_letter(tokens, first[1]))
        if second is None:
            return None
        third = _letter(tokens, _after_letter(tokens, second[1]))
        if (
            third is not None
            and not _low(tokens, _after_letter(tokens, third[1])).isdigit()
        ):
            return None  # "1234 a b c": spelling something else (not "a 10047")
        letters, end = first[0] + second[0], second[1]
    elif start < len(tokens) and _two_letter_word(tokens, start):
        letters, end = tokens[start], start + 1
    else:
        return None
    try:
        return normalize_postcode(f"{digits} {letters}"), end
    except InvalidInput:
        return None


def _after_letter(tokens: list[str], index: int) -> int:
    """The next token after a spelt letter: whitespace and one dot ("L.E.") skipped."""
    if index < len(tokens) and tokens[index] == ".":
        index += 1
    return _skip(tokens, index, dash=False)


def _two_letter_word(tokens: list[str], index: int) -> bool:
    """A two-letter word right after the digits: upper case, or the last word."""
    token = tokens[index]
    if not (len(token) == 2 and token.isascii() and token.isalpha()):
        return False
    if token.isupper():
        return True
    following = (t for t in range(index + 1, len(tokens)))
    return not any(tokens[t][:1].isalnum() for t in following)


# --- tickets ----------------------------------------------------------------------


def _ticket_symbols(tokens: list[str], index: int) -> tuple[str, int] | None:
    """The letters or digits one token spells at ``index``: ``(symbols, end)``."""
    if index >= len(tokens):
        return None
    token, word = tokens[index], tokens[index].lower()
    if token.isdigit() and token.isascii():
        return token, index + 1
    unit = _unit(token)
    if unit is not None and word not in AMBIGUOUS:
        return str(unit), index + 1
    letter = _letter(tokens, index)
    if letter is not None:
        return letter
    if not (token.isascii() and token.isalpha()):
        return None
    glued = (index > 0 and tokens[index - 1].isdigit()) or (
        index + 1 < len(tokens) and tokens[index + 1].isdigit()
    )
    if token.isupper() or glued:
        return token.upper(), index + 1
    return None


def _ticket_at(tokens: list[str], index: int) -> tuple[str, int] | None:
    """A ticket number starting with the "t" at ``index``: ``(T-XXXXXX, end)``."""
    position = _skip(tokens, index + 1)
    if _low(tokens, position) in DASH_WORDS:
        position = _skip(tokens, position + 1)
    code, end = "", index + 1
    while len(code) < TICKET_CODE_LENGTH:
        found = _ticket_symbols(tokens, position)
        if found is None:
            return None
        code += found[0]
        end = found[1]
        position = _skip(tokens, end, dash=False)
    if len(code) != TICKET_CODE_LENGTH or _ticket_symbols(tokens, position):
        return None
    if not all(c in TICKET_ALPHABET for c in code) or not any(
        c.isdigit() for c in code
    ):
        return None
    try:
        return normalize_ticket_number(f"T-{code}"), end
    except InvalidInput:
        return None


def _tickets(tokens: list[str]) -> list[str]:
    """Spelt ticket numbers -> ``T-XXXXXX``."""
    out: list[str] = []
    index = 0
    while index < len(tokens):
        found = None
        if tokens[index].lower() in TICKET_WORDS:
            found = _ticket_at(tokens, index)
        if found is None:
            out.append(tokens[index])
            index += 1
            continue
        out.append(found[0])
        index = found[1]
    return out
