"""A mail body -> the customer's text: pure text functions, no MIME.

``html_to_text`` reads an HTML body as a reader would see it (script and style
dropped, blocks as line breaks, quoted mail left out); ``clean_reply_text``
keeps the customer's new text of a reply (quotes, reply headers, signatures and
mobile footers removed); ``unflow`` joins the soft line breaks of
``format=flowed`` text. ``channels.email_parse`` picks the body part, decodes
it and calls these.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

__all__ = ["clean_reply_text", "html_to_text", "unflow"]

# -- reply text ----------------------------------------------------------------
QUOTE_MARKERS = re.compile(r"^(?:[ \t]*>)+ ?")
ATTRIBUTION = (
    re.compile(r"^on\b.{1,400}\bwrote:$", re.IGNORECASE),
    re.compile(r"^op\b.{1,400}\bschreef\b.{0,400}:$", re.IGNORECASE),
    re.compile(r"^am\b.{1,400}\bschrieb\b.{0,400}:$", re.IGNORECASE),
    re.compile(r"^le\b.{1,400}\ba écrit ?:$", re.IGNORECASE),
)
ATTRIBUTION_START = re.compile(r"^(?:on|op|am|le)\b", re.IGNORECASE)
ORIGINAL_MESSAGE = re.compile(
    r"^-{2,}\s*(?:original message|oorspronkelijk bericht|ursprüngliche nachricht)"
    r"\s*-{2,}$",
    re.IGNORECASE,
)
FORWARD_MARKER = re.compile(
    r"^(?:-{2,}\s*(?:forwarded message|doorgestuurd bericht|"
    r"weitergeleitete nachricht)\s*-{2,}|begin forwarded message:|"
    r"begin doorgestuurd bericht:|anfang der weitergeleiteten nachricht:)$",
    re.IGNORECASE,
)
HEADER_FROM = re.compile(r"^\*?(?:from|van|von):\*?\s+\S", re.IGNORECASE)
HEADER_DATE = re.compile(
    r"^\*?(?:sent|date|verzonden|datum|gesendet):\*?\s", re.IGNORECASE
)
HEADER_TO = re.compile(
    r"^\*?(?:to|subject|aan|onderwerp|an|betreff):\*?\s", re.IGNORECASE
)
MOBILE_FOOTER = re.compile(
    r"(?:sent from my [\w .-]{1,40}|sent from (?:outlook|mail) for [\w .-]{1,30}|"
    r"get outlook for (?:ios|android)|verstuurd vanaf mijn [\w .-]{1,40}|"
    r"verzonden (?:vanaf|met) mijn [\w .-]{1,40}|gesendet von meinem [\w .-]{1,40}|"
    r"von meinem [\w .-]{1,30} gesendet)\s*(?:<[^>\s]{1,200}>)?",
    re.IGNORECASE,
)
SEPARATOR_LINE = re.compile(r"^[_\-=*]{5,}$")
MAX_HEADER_LINE = 500  # longer lines are never reply headers
BLANK_RUNS = re.compile(r"\n{3,}")

# -- HTML ----------------------------------------------------------------------
HIDDEN_TAGS = frozenset({"script", "style", "head", "title", "template"})
PARAGRAPH_TAGS = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "table", "ul", "ol"}
    | {"pre", "hr"}
)
LINE_TAGS = frozenset(
    {"div", "br", "li", "tr", "section", "article", "header", "footer", "address"}
    | {"dd", "dt", "dl", "center", "form", "fieldset", "caption", "nav", "aside"}
    | {"main", "figure", "figcaption"}
)
CELL_TAGS = frozenset({"td", "th"})
QUOTE_CLASSES = ("gmail_quote", "yahoo_quoted")
QUOTE_IDS = frozenset({"divrplyfwdmsg", "appendonsend"})
HIDDEN_CLASSES = ("gmail_signature", "moz-cite-prefix")
LINK_SCHEMES = ("http://", "https://", "mailto:")
SPACES = re.compile(r"[ \t\f\v\xa0]+")
INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff]")
TAGS = re.compile(r"<[^>]*>")
# "<" that cannot open a tag (not followed by a letter, "/", "!" or "?", or with
# another "<" or the end before its ">"), and declarations/processing
# instructions: html.parser rescans from each of them (quadratic time).
STRAY_LT = re.compile(r"<(?![a-zA-Z/!?])|<(?=[^<>]*(?:<|\Z))")
DECLARATION = re.compile(r"<[!?][^>]*>")


# -- format=flowed --------------------------------------------------------------


def unflow(text: str, *, delsp: bool = False) -> str:
    """Join the soft line breaks of ``format=flowed`` text (RFC 3676).

    A line ending in a space continues on the next line (without that space
    when ``delsp``); a leading stuffing space is removed; quoted lines and the
    signature delimiter "-- " are never joined.
    """
    joined: list[str] = []
    carry = ""
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.startswith(">"):
            if carry:
                joined.append(carry)
                carry = ""
            joined.append(line)
            continue
        if line.startswith(" "):
            line = line[1:]
        if line.endswith(" ") and line != "-- ":
            carry += line[:-1] if delsp else line
            continue
        joined.append(carry + line)
        carry = ""
    if carry:
        joined.append(carry)
    return "\n".join(joined)


# -- HTML -> text ----------------------------------------------------------------


class _HtmlText(HTMLParser):
    """Collects the readable text of an HTML mail part (see ``html_to_text``)."""

    def __init__(self, *, drop_quotes: bool) -> None:
        super().__init__(convert_charrefs=True)
        self.drop_quotes = drop_quotes
        self.out: list[str] = []
        self.words = 0  # emitted pieces with visible text
        self.newlines = 2  # line ends at the end of ``out`` (none needed at start)
        self.hidden: str | None = None  # the tag whose content is dropped
        self.hidden_depth = 0
        self.stopped = False  # a reply quote began: everything after is dropped
        self.pre = 0
        self.links: list[tuple[str | None, int]] = []  # (href, words at <a>)

    def _emit(self, text: str) -> None:
        self.out.append(text)
        body = text.rstrip(" \t")
        if body.strip():
            self.words += 1
        if body:
            stripped = body.rstrip("\n")
            ends = len(body) - len(stripped)
            self.newlines = ends if stripped else self.newlines + ends

    def _line_ends(self, wanted: int) -> None:
        if self.newlines < wanted:
            self._emit("\n" * (wanted - self.newlines))

    def _break(self, tag: str) -> None:
        if tag == "br":
            self._emit("\n")
        elif tag in PARAGRAPH_TAGS:
            self._line_ends(2)
        elif tag in LINE_TAGS:
            self._line_ends(1)
        elif tag in CELL_TAGS:
            self._emit(" ")

    def _hides(self, tag: str, attrs: dict[str, str]) -> bool:
        if tag in HIDDEN_TAGS:
            return True
        if not self.drop_quotes:
            return False
        classes = attrs.get("class", "").split()
        return tag == "blockquote" or any(c in HIDDEN_CLASSES for c in classes)

    def _starts_quote(self, attrs: dict[str, str]) -> bool:
        if not self.drop_quotes:
            return False
        classes = attrs.get("class", "").split()
        if any(c.startswith(QUOTE_CLASSES) for c in classes):
            return True
        return attrs.get("id", "").strip().lower() in QUOTE_IDS

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Open an element: hide it, stop at a quote, or break the line."""
        if self.stopped:
            return
        if self.hidden is not None:
            if tag == self.hidden:
                self.hidden_depth += 1
            elif tag == "body" and self.hidden == "head":
                self.hidden, self.hidden_depth = None, 0  # </head> left out
            return
        values = {name: value or "" for name, value in attrs}
        if self._starts_quote(values):
            self.stopped = True
            return
        if self._hides(tag, values):
            self.hidden, self.hidden_depth = tag, 1
            self._break(tag)
            return
        self._break(tag)
        if tag == "pre":
            self.pre += 1
        elif tag == "a":
            self.links.append((values.get("href"), self.words))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """``<br/>`` and the like: a break, nothing to hide."""
        if not self.stopped and self.hidden is None:
            self._break(tag)

    def handle_endtag(self, tag: str) -> None:
        """Close an element: end hiding, add a link's URL, break the line."""
        if self.stopped:
            return
        if self.hidden is not None:
            if tag == self.hidden:
                self.hidden_depth -= 1
                if self.hidden_depth == 0:
                    self.hidden = None
            return
        if tag == "a" and self.links:
            href, words = self.links.pop()
            url = (href or "").strip()
            if self.words == words and url.lower().startswith(LINK_SCHEMES):
                self._emit(url.removeprefix("mailto:"))
        elif tag == "pre" and self.pre:
            self.pre -= 1
        if tag != "br":
            self._break(tag)

    def handle_data(self, data: str) -> None:
        """Text: whitespace collapsed as a browser does (kept inside ``<pre>``)."""
        if self.stopped or self.hidden is not None:
            return
        self._emit(data if self.pre else re.sub(r"\s+", " ", data))

    def text(self) -> str:
        """The collected text, tidied: one space between words, no blank runs."""
        return _tidy_html_text("".join(self.out))


def _tidy_html_text(text: str) -> str:
    text = INVISIBLE.sub("", text)
    lines = [SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()


def _defused(markup: str) -> str:
    """``markup`` that html.parser reads in linear time, meaning unchanged.

    Comments are removed (an unclosed one hides the rest, as in a browser),
    then stray "<" are escaped and declarations (``<!DOCTYPE>``, ``<![if]>``,
    ``<?xml?>``) removed.
    """
    kept: list[str] = []
    index = 0
    while True:
        start = markup.find("<!--", index)
        if start < 0:
            kept.append(markup[index:])
            break
        kept.append(markup[index:start])
        end = markup.find("-->", start + 4)
        if end < 0:
            break
        index = end + 3
    text = STRAY_LT.sub("&lt;", "".join(kept))
    return DECLARATION.sub("", text)


def _html_text(markup: str, *, drop_quotes: bool) -> str:
    parser = _HtmlText(drop_quotes=drop_quotes)
    markup = _defused(markup)
    try:
        parser.feed(markup)
        parser.close()
        return parser.text()
    except Exception:  # noqa: BLE001 - html.parser gives up on some markup
        return _tidy_html_text(html.unescape(TAGS.sub(" ", markup)))


def html_to_text(html_text: str, *, drop_quotes: bool = True) -> str:
    """The readable text of an HTML mail, without the quoted mail below it.

    Script, style, head and title are dropped; block elements become line
    breaks (paragraphs a blank line); a link becomes its label (its URL only if
    the label is empty); entities are unescaped; spaces and blank lines are
    collapsed. Quoted mail is dropped: ``<blockquote>`` content, Gmail and
    Thunderbird signature/attribution blocks, and everything from an element
    with class ``gmail_quote``/``yahoo_quoted`` or id ``divRplyFwdMsg`` /
    ``appendonsend`` (Outlook) on.

    Args:
        html_text: the HTML body, decoded.
        drop_quotes: False keeps the quoted mail and signature blocks (only
            script, style, head, title and template are dropped).
    """
    return _html_text(html_text, drop_quotes=drop_quotes)


# -- reply text ----------------------------------------------------------------


def _attribution(lines: list[str], index: int) -> int:
    """Lines (1 or 2) of an "On ... wrote:" header at ``index``; 0 if none."""
    line = lines[index].strip()
    if len(line) > MAX_HEADER_LINE or not ATTRIBUTION_START.match(line):
        return 0
    if any(pattern.match(line) for pattern in ATTRIBUTION):
        return 1
    if index + 1 < len(lines):
        joined = f"{line} {lines[index + 1].strip()}"
        if len(joined) <= MAX_HEADER_LINE and any(
            pattern.match(joined) for pattern in ATTRIBUTION
        ):
            return 2
    return 0


def _outlook_header(lines: list[str], index: int) -> bool:
    """True at "From: ..." followed within 4 lines by Sent:/Date: and To:/Subject:."""
    if not HEADER_FROM.match(lines[index].strip()):
        return False
    window = [line.strip() for line in lines[index + 1 : index + 5]]
    return any(HEADER_DATE.match(w) for w in window) and any(
        HEADER_TO.match(w) for w in window
    )


def _tidy(lines: list[str]) -> str:
    text = "\n".join(line.rstrip() for line in lines)
    return BLANK_RUNS.sub("\n\n", text).strip()


def clean_reply_text(text: str) -> str:
    """The customer's new text of a reply: quotes, reply headers, signature removed.

    Lines starting with ``>`` are removed. The text is cut at the first reply
    header: "On ... wrote:" (also wrapped over two lines), Dutch "Op ...
    schreef ...:", German "Am ... schrieb ...:", French "Le ... a écrit :",
    "-----Original Message-----"
    (and its Dutch and German forms), or an Outlook header block ("From:"
    followed within 4 lines by "Sent:"/"Date:" and "To:"/"Subject:", also in
    Dutch and German); and at a signature delimiter line ("-- " or "--").
    Mobile footers ("Sent from my iPhone", "Verstuurd vanaf mijn iPhone", "Get
    Outlook for iOS", ...) are dropped. A forwarded message ("---------- Forwarded
    message ---------", "Begin forwarded message:") is the customer's payload:
    nothing after its marker is cut. A reply header with no text above it (a
    reply written below the quote) is skipped instead of cut at, and an Outlook
    block or "Original Message" with nothing above it is kept as forwarded
    content. Line ends are normalised, runs of blank lines collapsed to one,
    the result trimmed.

    Choice: if this leaves nothing although the text had some (the whole mail
    is a quote, or the customer typed inside it), the original text is returned
    without its ``>`` markers rather than "": a mail is never read as empty.
    """
    if not isinstance(text, str):
        return ""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    forwarded = False
    index = 0
    while index < len(lines):
        line = lines[index]
        stripped = line.strip()
        index += 1
        if stripped.startswith(">") or MOBILE_FOOTER.fullmatch(stripped):
            continue
        if forwarded:
            kept.append(line)
            continue
        if FORWARD_MARKER.fullmatch(stripped):
            forwarded = True
            kept.append(line)
            continue
        if line in ("-- ", "--"):
            break
        has_text = any(k.strip() for k in kept)
        header = _attribution(lines, index - 1)
        if header:
            if has_text:
                break
            index += header - 1
            continue
        if len(stripped) <= MAX_HEADER_LINE and (
            ORIGINAL_MESSAGE.fullmatch(stripped) or _outlook_header(lines, index - 1)
        ):
            if has_text:
                break
            forwarded = True
        kept.append(line)
    while kept and (not kept[-1].strip() or SEPARATOR_LINE.match(kept[-1].strip())):
        kept.pop()
    result = _tidy(kept)
    if result:
        return result
    return _tidy([QUOTE_MARKERS.sub("", line) for line in lines])
