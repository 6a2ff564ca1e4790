"""Order numbers and postcodes in every form customers type or say them.

One place decides what an order number or a postcode is; the NLU's regex
features (``data/nlu/service.yml``, kept equal to ``NLU_REGEX`` by a test), the
dialogue forms and the services all call these functions.

Order numbers are stored as ``A`` + 5 digits. Customers write ``A10047``,
``a10047``, ``A 10047``, ``a-10047``, ``#10047``, ``order no. 10047`` or just
``10047``; a voice channel sends ``one zero zero four seven``. Postcodes are
Dutch (``5500 LE``, also ``5500le``, ``5500-LE``) or Belgian (``1000``).
"""

from __future__ import annotations

import re

from crm_store.errors import InvalidInput

ORDER_PREFIX = "A"
ORDER_DIGITS = 5

_DIGIT_WORDS = {
    "zero": "0",
    "oh": "0",
    "o": "0",
    "nil": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
}
_REPEAT_WORDS = {"double": 2, "triple": 3}
# Words that are digits only inside a run of spelled digits ("o", "oh").
_AMBIGUOUS = {"o", "oh", "nil"}
_WORD = re.compile(r"[A-Za-z]+|\d|\S|\s+")

# 5 digits together, or grouped ("100 47", "1 0 0 4 7") and then not followed
# by more digits.
_DIGITS5 = r"(\d{5}(?!\d)|\d(?:[ \-]?\d){4}(?![ \-]?\d))"
# The letter, separators, then the digits.
_ORDER_LETTER = re.compile(rf"(?<![A-Za-z0-9])[Aa][ \t\-.:#]*{_DIGITS5}(?![A-Za-z])")
# Digits only, not glued to a phone number ("+31 …", "020 12345").
_ORDER_DIGITS = re.compile(
    rf"(?<![\d+])(?<!\d[ \-])(?<![A-Za-z])#?{_DIGITS5}(?![A-Za-z])"
)
_ORDER_PLAIN = re.compile(r"[\s\-.#:]")

# Dutch postcode letters never use I, O, Q, U, Y, nor SA, SD, SS: that rules
# out English words such as "is", "in", "on", "of" after a Belgian postcode;
# the other short words ("at", "as", "we") count as letters only at the end.
_PC_LETTER = "[ABCDEFGHJKLMNPRSTVWXZabcdefghjklmnprstvwxz]"
_POSTCODE_NL = re.compile(
    rf"(?<![\d+])([1-9]\d{{3}})[ \-]?({_PC_LETTER})[ ]?({_PC_LETTER})(?![A-Za-z])"
)
# A bare 4-digit (Belgian) postcode, not part of a longer number.
_POSTCODE_BE = re.compile(r"(?<![\d+])(?<!\d[ \-])([1-9]\d{3})(?![ \-]?\d)(?![A-Za-z])")
_NOT_POSTCODE_LETTERS = {"SA", "SD", "SS", "AT", "AN", "AS", "BE", "HE", "ME", "WE"}

# The RegexFeaturizer patterns (Python ``re`` syntax; case-insensitive in config.yml).
NLU_REGEX: dict[str, list[str]] = {
    "order_number": [
        r"\b[Aa][\s\-.#]*\d{5}\b",
        r"#\d{5}\b",
        r"\b\d{5}\b",
    ],
    "postcode": [
        r"\b[1-9]\d{3}\s?-?[A-Za-z]{2}\b",
        r"\b[1-9]\d{3}\b",
    ],
}


def spoken_digits(text: str) -> str:
    """Turn runs of spelled digits into digits (``one zero zero four seven``: 10047).

    A run is two or more digit words (``double four`` counts as two), so a lone
    ``one`` or ``for`` in a sentence is left alone. ``oh``/``o``/``for`` count
    only inside a run.
    """
    tokens = _WORD.findall(text)
    out: list[str] = []
    run: list[str] = []  # digits of the current run
    raw: list[str] = []  # tokens of the current run, to restore a short run
    repeat = 0

    def flush() -> None:
        nonlocal repeat
        trailing: list[str] = []
        while raw and raw[-1].isspace():
            trailing.insert(0, raw.pop())
        words = [t for t in raw if not t.isspace() and t != "-"]
        ambiguous_only = all(w.lower() in _AMBIGUOUS for w in words)
        if len(run) >= 2 and not ambiguous_only:
            out.append("".join(run))
        else:
            out.extend(raw)
        out.extend(trailing)
        run.clear()
        raw.clear()
        repeat = 0

    for token in tokens:
        low = token.lower()
        if low in _REPEAT_WORDS:
            raw.append(token)
            repeat = _REPEAT_WORDS[low]
            continue
        if low in _DIGIT_WORDS or token.isdigit():
            digit = _DIGIT_WORDS.get(low, token)
            run.extend([digit] * (repeat or 1))
            raw.append(token)
            repeat = 0
            continue
        if (token.isspace() or token == "-") and raw:
            raw.append(token)
            continue
        if raw:
            flush()
        out.append(token)
    if raw:
        flush()
    return "".join(out)


def _canonical_order(digits: str) -> str:
    return ORDER_PREFIX + re.sub(r"\D", "", digits)


def find_order_number(text: object) -> str | None:
    """Return the first order number in free text, as stored (``A10047``), or None.

    Anything but a string (an entity sent as ``{}``, ``5`` or a list) is None.
    The letter form wins over bare digits; spelled digits are read as digits.
    """
    if not isinstance(text, str) or not text.strip():
        return None
    text = text[:2000]
    for candidate in (text, spoken_digits(text)):
        match = _ORDER_LETTER.search(candidate) or _ORDER_DIGITS.search(candidate)
        if match:
            return _canonical_order(match.group(1))
    return None


def normalize_order_number(order_number: str) -> str:
    """Return an order number in its stored form (``a-10047`` -> ``A10047``).

    Accepts the whole value in any form ``find_order_number`` reads. Other
    letters-and-digits values (``B123``) are returned upper-cased: they are
    looked up and simply not found.

    Raises:
        InvalidInput: empty, too long, or not letters and digits.
    """
    value = (order_number or "").strip() if isinstance(order_number, str) else ""
    found = find_order_number(value)
    if found is not None and len(_ORDER_PLAIN.sub("", value)) <= ORDER_DIGITS + 1:
        return found
    value = value.upper().lstrip("#")
    if not value or len(value) > 32 or not value.isalnum():
        raise InvalidInput("an order number is letters and digits, e.g. A10001")
    return value


def find_postcode(text: object) -> str | None:
    """Return the first postcode in free text: ``5500 LE`` (NL) or ``1000`` (BE).

    Anything but a string is None. Order numbers (5 digits) and phone numbers
    are not postcodes; spelled digits are read as digits.
    """
    if not isinstance(text, str) or not text.strip():
        return None
    text = text[:2000]
    for candidate in (text, spoken_digits(text)):
        for match in _POSTCODE_NL.finditer(candidate):
            digits, first, second = match.groups()
            letters = (first + second).upper()
            followed_by_words = re.match(r"\s+[A-Za-z]", candidate[match.end() :])
            if letters not in _NOT_POSTCODE_LETTERS or not followed_by_words:
                return f"{digits} {(first + second).upper()}"
        match = _POSTCODE_BE.search(candidate)
        if match:
            return match.group(1)
    return None


def normalize_postcode(postcode: str) -> str:
    """Return a whole value as a canonical postcode (``5500le`` -> ``5500 LE``).

    Raises:
        InvalidInput: the value is not a postcode.
    """
    found = find_postcode(postcode)
    if found is None or len(re.sub(r"[\s\-]", "", str(postcode))) != len(
        found.replace(" ", "")
    ):
        raise InvalidInput("a postcode looks like 1234 AB (or 1000 in Belgium)")
    return found
