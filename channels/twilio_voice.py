"""The Twilio voice channel: phone calls as Rasa turns, answered with TwiML.

``credentials.yml``: ``channels.twilio_voice.TwilioVoiceInput:`` (no values:
secrets only from the environment). Routes under ``/webhooks/twilio_voice/``:
``GET /`` (health), ``POST /webhook`` (the number's voice URL: every turn of a
call) and ``POST /status`` (the number's status callback URL).

- **Off.** Without ``TWILIO_ACCOUNT_SID``, ``TWILIO_AUTH_TOKEN`` and
  ``TWILIO_PUBLIC_URL`` the POST routes answer 503.
- **Signed.** ``X-Twilio-Signature`` is checked with the SDK's validator over
  ``TWILIO_PUBLIC_URL`` + the request path + its query string and the form
  parameters (blank ones included, as Twilio signs them): anything else gets
  403 before anything is run or written. A body over ``CRM_MAX_REQUEST_BYTES``
  is 413, a form that is not UTF-8 or repeats a field 400; a signed request
  without a valid ``CallSid`` or ``From`` is 400.
- **Who.** The tracker key is ``voice:<From>`` (E.164). A withheld caller id
  (not E.164, or one of Twilio's anonymous placeholders) gets a key of its own
  per call, ``voice:withheld:<CallSid>``, so anonymous callers never share a
  conversation. The caller id alone proves nothing (``actions.common``).
- **Turns.** The call's first request (no ``SpeechResult``, no ``Digits``, no
  ``stage``) runs ``/greet``. ``SpeechResult`` goes through
  ``channels.speech.normalize_utterance``; a lone number said while choices are
  offered is that choice. ``Digits`` are a menu choice (``choice_payload``) or
  text (``digits_to_text``; five digits are an order number when the bot's last
  prompt asked for one). Leading slashes are removed from what the caller said,
  so speech cannot inject intents. An empty answer is treated like silence.
- **Answers.** The bot's texts are spoken with ``<Say voice=TWILIO_VOICE>``
  inside ``<Gather input="speech dtmf">`` (language ``TWILIO_LANGUAGE``,
  ``speechTimeout="auto"``, ``HINTS``, barge-in), buttons read as "Say or press
  1 for Yes, 2 for No." and remembered in the store (``remember_choices``).
  After the Gather a ``<Redirect>`` to ``webhook?stage=silence1``: Twilio follows
  it when the caller says nothing (``actionOnEmptyResult`` is not set, so an
  empty Gather never posts an answer). Customer text never reaches TwiML: only
  the bot's texts, inside ``<Say>``, escaped by the SDK's XML builder.
- **Silence.** ``stage=silence1``: "Sorry, I didn't catch that." and the last
  prompt once more (Redirect to ``stage=silence2``); ``stage=silence2``: a
  goodbye and ``<Hangup/>``.
- **Slow turns.** A turn runs as a task. Not done within ``hold_after``
  (``HOLD_AFTER`` seconds): "One moment please." and a Redirect to
  ``webhook?stage=wait&turn=<id>``; that request waits up to ``hold_after`` again
  and answers, or holds again, at most ``max_holds`` times, then apologises and
  hangs up. So every webhook answers well within Twilio's 15 s limit. An unknown
  turn id (another process, a restart) gets an apology and a re-prompt.
- **Handoff.** After each turn: an open handoff of the key's open conversation
  (``open_handoff_for_key``) puts the call through, when agents work now
  (``CRM_AGENT_HOURS``) and ``TWILIO_AGENT_NUMBER`` is set, with ``<Dial
  callerId=TWILIO_FROM_NUMBER or the called number>``; otherwise the bot's text
  (it promised a callback and opened a ticket) is followed by a goodbye and
  ``<Hangup/>``. A handoff of an earlier, closed conversation does not count.
- **Status.** A final ``CallStatus`` (completed, busy, failed, no-answer,
  canceled) closes the key's open conversation once (receipt
  ``voice``/``<CallSid>:<CallStatus>``): ``escalated`` when it was escalated or
  has an open handoff, ``self_served`` when the caller said or pressed
  something, else ``abandoned``. Always 204 (a store failure is logged; the idle
  closer closes the conversation later).

**One process per call.** The registry of calls (last prompt, pending turns,
whether the caller spoke) is in memory. With several Rasa instances behind a
load balancer every request of one call must reach the same instance: route
sticky per call (Twilio keeps cookies for the duration of a call, so a cookie-
based sticky session works). A request that lands elsewhere still gets a
sensible answer (a generic re-prompt, outcome from the stored transcript).

**No turn de-duplication.** Every webhook answers within ``hold_after`` plus a
little, so Twilio has no reason to retry; a retried request would run its turn
again. Only status callbacks are de-duplicated.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from rasa.core.channels.channel import (
    CollectingOutputChannel,
    InputChannel,
    UserMessage,
)
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse
from sqlalchemy.orm import Session, sessionmaker
from twilio.twiml.voice_response import Gather, VoiceResponse

from channels.keys import tracker_key
from channels.rest import BadRequest
from channels.speech import EXPECT_ORDER_NUMBER, digits_to_text, normalize_utterance
from channels.text import clean_text
from channels.twilio_signature import SIGNATURE_HEADER, public_url, signature_ok
from crm_settings import get_settings
from crm_store.db import retry_when_locked, run_unit
from crm_store.db import session_factory as store_session_factory
from crm_store.errors import InvalidInput
from crm_store.services.agent_hours import AgentHours, parse_agent_hours
from crm_store.services.choices import choice_payload, remember_choices
from crm_store.services.conversations import close_conversation
from crm_store.services.handoff import agents_available, open_handoff_for_key
from crm_store.services.history import latest_conversation
from crm_store.services.interactions import transcript
from crm_store.services.normalize import normalize_identity
from crm_store.services.receipts import claim_receipt

logger = logging.getLogger(__name__)

NO_CONVERSATION = "no open conversation"
CLOSE_RETRIES = 10
CLOSE_RETRY_SECONDS = 0.5

# The bot asks for an order: keyed-in digits are then an order number.
ORDER_QUESTION = re.compile(r"order number|which order", re.IGNORECASE)

CHANNEL = "twilio_voice"  # the Rasa input channel (history channel "voice")
KEY_CHANNEL = "voice"  # tracker keys and receipts
START_TEXT = "/greet"
HOLD_AFTER = 4.0  # seconds a webhook waits for a turn before holding
MAX_HOLDS = 3
DEFAULT_MAX_MESSAGE_CHARS = 4000
DEFAULT_MAX_REQUEST_BYTES = 65536
MAX_FORM_FIELDS = 200
MAX_CALLS = 10_000  # calls remembered per process
CALL_TTL = 4 * 3600.0  # seconds a call is remembered after its last request

HINTS = (
    "order number, postcode, yes, no, a person, cancel, return, "
    "A one zero zero, A ten thousand, ticket T"
)
CHOICES_TEXT = "Say or press {choices}."
HOLD_TEXT = "One moment please."
SORRY_TEXT = "Sorry, I didn't catch that."
GENERIC_PROMPT = "How can I help you?"
SILENCE_GOODBYE = (
    "I'll end the call now. Goodbye, and thanks for calling Northwind Goods."
)
HANDOFF_GOODBYE = "Thanks for calling Northwind Goods. Goodbye."
TOO_SLOW_TEXT = (
    "Sorry, this is taking longer than it should. Please call again in a few "
    "minutes. Goodbye."
)
FAILED_TEXT = "Sorry, something went wrong on our side."
LOST_TEXT = "Sorry, I lost track of that. Could you say it again?"

STAGE_SILENCE1 = "silence1"
STAGE_SILENCE2 = "silence2"
STAGE_WAIT = "wait"
STAGES = (STAGE_SILENCE1, STAGE_SILENCE2, STAGE_WAIT)
FINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
CALL_SID = re.compile(r"CA[0-9a-fA-F]{32}")
TURN_ID = re.compile(r"[0-9a-f]{32}")
DTMF = re.compile(r"[0-9*#]{1,32}")
# What Twilio sends as From when the caller id is withheld.
ANONYMOUS_NUMBERS = frozenset(
    {"+266696687", "+86282452253", "+8656696", "+2562533", "+7378742833"}
)
LONE_NUMBERS = {
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
OnNewMessage = Callable[[UserMessage], Awaitable[Any]]


# --- requests ---------------------------------------------------------------------


def form_params(body: bytes | None, max_bytes: int) -> dict[str, str]:
    """The form parameters of a POST body, blank values kept (Twilio signs them).

    Raises:
        BadRequest: larger than ``max_bytes`` (413); not UTF-8, too many
            fields or a field given twice (400).
    """
    body = body or b""
    if len(body) > max_bytes:
        raise BadRequest(f"the request body is larger than {max_bytes} bytes", 413)
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except UnicodeDecodeError as error:
        raise BadRequest("the form must be UTF-8") from error
    except ValueError as error:
        raise BadRequest(f"at most {MAX_FORM_FIELDS} form fields") from error
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            raise BadRequest("a form field is given twice")
        params[name] = value
    return params


def caller_key(from_number: str, call_sid: str) -> str:
    """The tracker key of a call: ``voice:<E.164>``, or per call when withheld."""
    try:
        number = normalize_identity("phone", from_number)
    except InvalidInput:
        number = None
    if number is None or number in ANONYMOUS_NUMBERS:
        return tracker_key(KEY_CHANNEL, f"withheld:{call_sid}")
    return tracker_key(KEY_CHANNEL, number)


def without_slashes(text: str) -> str:
    """``text`` without the leading slashes Rasa would read as an intent."""
    while text.strip().startswith("/"):
        text = text.strip().lstrip("/")
    return text


def lone_number(text: str) -> str | None:
    """The number of an answer that is only a number ("Two.", "2"), else None."""
    word = re.sub(r"[^\w]", "", text).lower()
    if word.isdigit() and word.isascii() and len(word) <= 2:
        return word
    return LONE_NUMBERS.get(word)


# --- calls --------------------------------------------------------------------------


@dataclass
class TurnResult:
    """What a turn produced: the bot's messages, remembered choices, handoff."""

    messages: list[dict[str, Any]]
    choices: list[dict[str, str]] = field(default_factory=list)
    handoff: bool = False
    failed: bool = False


@dataclass
class PendingTurn:
    """A turn still running after its webhook answered with a holding phrase."""

    id: str
    task: asyncio.Future[TurnResult]
    holds: int = 0


@dataclass
class CallState:
    """What this process remembers of one call (see "One process per call")."""

    prompt: list[str] = field(default_factory=list)
    expect_order: bool = False
    spoke: bool = False
    pending: PendingTurn | None = None
    seen: float = field(default_factory=time.monotonic)


class CallRegistry:
    """The calls of this process by ``CallSid`` (bounded, forgotten after a while)."""

    def __init__(self, *, max_calls: int = MAX_CALLS, ttl: float = CALL_TTL) -> None:
        """Remember at most ``max_calls`` calls for ``ttl`` seconds each."""
        self.max_calls = max_calls
        self.ttl = ttl
        self._calls: dict[str, CallState] = {}

    def __len__(self) -> int:
        """The number of calls remembered."""
        return len(self._calls)

    def get(self, call_sid: str) -> CallState | None:
        """The call's state, if remembered."""
        state = self._calls.get(call_sid)
        if state is not None:
            state.seen = time.monotonic()
        return state

    def state(self, call_sid: str) -> CallState:
        """The call's state, made on first use."""
        state = self.get(call_sid)
        if state is None:
            self._prune()
            state = self._calls[call_sid] = CallState()
        return state

    def pop(self, call_sid: str) -> CallState | None:
        """Forget a call; return what was remembered."""
        return self._calls.pop(call_sid, None)

    def _prune(self) -> None:
        now = time.monotonic()
        for sid in [s for s, c in self._calls.items() if now - c.seen > self.ttl]:
            del self._calls[sid]
        while len(self._calls) >= self.max_calls:
            oldest = min(self._calls, key=lambda s: self._calls[s].seen)
            del self._calls[oldest]


class VoiceOutput(CollectingOutputChannel):
    """Collects a turn's answers; the webhook speaks them."""

    @classmethod
    def name(cls) -> str:
        """``twilio_voice``."""
        return CHANNEL


def spoken_texts(messages: list[dict[str, Any]], choices: list[dict]) -> list[str]:
    """The bot's messages as what ``<Say>`` speaks; ``choices`` after the last text.

    Images and attachments are not spoken; a custom payload only by its ``text``.
    """
    texts: list[str] = []
    for message in messages:
        text = message.get("text")
        custom = message.get("custom")
        if not isinstance(text, str) and isinstance(custom, dict):
            text = custom.get("text")
        if isinstance(text, str) and text.strip():
            texts.append(text.strip())
    if choices:
        listed = ", ".join(f"{n} for {c['title']}" for n, c in enumerate(choices, 1))
        texts.append(CHOICES_TEXT.format(choices=listed))
    return texts


def last_buttons(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The buttons of the turn's last message that has any."""
    for message in reversed(messages):
        buttons = message.get("buttons")
        if isinstance(buttons, list) and buttons:
            return buttons
    return []


# --- the channel ------------------------------------------------------------------


class TwilioVoiceInput(InputChannel):
    """The Twilio voice webhook (see the module docstring)."""

    def __init__(
        self,
        *,
        auth_token: str | None,
        public_base: str | None,
        session_factory: sessionmaker | None = None,
        from_number: str | None = None,
        agent_number: str | None = None,
        voice: str = "Polly.Joanna",
        language: str = "en-US",
        agent_hours: str | None = None,
        hold_after: float = HOLD_AFTER,
        max_holds: int = MAX_HOLDS,
        max_message_chars: int = DEFAULT_MAX_MESSAGE_CHARS,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    ) -> None:
        """Configure the channel; it is off without an auth token or public base.

        ``agent_hours``: a ``CRM_AGENT_HOURS`` spec (None: the policies' hours).
        ``hold_after``/``max_holds``: the holding rule (tests shorten it).

        Raises:
            ValueError: the channel is on but has no store (``session_factory``).
            InvalidInput: ``agent_hours`` is not a valid spec.
        """
        self.auth_token = auth_token or None
        self.public_base = (public_base or "").rstrip("/") or None
        self.session_factory = session_factory
        self.from_number = from_number or None
        self.agent_number = agent_number or None
        self.voice = voice
        self.language = language
        self.hours: AgentHours | None = (
            parse_agent_hours(agent_hours) if agent_hours else None
        )
        self.hold_after = hold_after
        self.max_holds = max_holds
        self.max_message_chars = max_message_chars
        self.max_request_bytes = max_request_bytes
        self.calls = CallRegistry()
        self._tasks: set[asyncio.Future[TurnResult]] = set()
        if not self.enabled:
            # Debug only: `crm run` prints one line per channel saying how to
            # turn it on; the health route shows "enabled": false too.
            logger.debug(
                "twilio_voice: channel off: TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN/"
                "TWILIO_PUBLIC_URL unset"
            )
        elif session_factory is None:
            raise ValueError("the Twilio voice channel needs the store")

    @property
    def enabled(self) -> bool:
        """True when the channel can check signatures (token and public URL)."""
        return bool(self.auth_token and self.public_base)

    @classmethod
    def name(cls) -> str:
        """``twilio_voice``: routes under ``/webhooks/twilio_voice/``."""
        return CHANNEL

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> TwilioVoiceInput:
        """Ignore ``credentials``: everything comes from the settings."""
        settings = get_settings()
        enabled = settings.twilio_enabled
        token = settings.twilio_auth_token
        return cls(
            auth_token=token.get_secret_value() if enabled and token else None,
            public_base=settings.twilio_public_url if enabled else None,
            session_factory=(
                store_session_factory(settings.database_url, echo=settings.echo_sql)
                if enabled
                else None
            ),
            from_number=settings.twilio_from_number,
            agent_number=settings.twilio_agent_number,
            voice=settings.twilio_voice,
            language=settings.twilio_language,
            agent_hours=settings.agent_hours,
            max_message_chars=settings.max_message_chars,
            max_request_bytes=settings.max_request_bytes,
        )

    # --- checks ----------------------------------------------------------------

    def checked(self, request: Request) -> dict[str, str]:
        """The form of a signed request to this channel.

        Raises:
            BadRequest: off (503), too large (413), unreadable form (400) or
                signature missing or wrong (403).
        """
        if not self.enabled:
            raise BadRequest("the Twilio voice channel is not configured", 503)
        params = form_params(request.body, self.max_request_bytes)
        assert self.public_base is not None and self.auth_token is not None
        url = public_url(self.public_base, request.path, request.query_string)
        if not signature_ok(
            self.auth_token, url, params, request.headers.get(SIGNATURE_HEADER)
        ):
            raise BadRequest("forbidden", 403)
        return params

    @staticmethod
    def call_of(params: dict[str, str]) -> tuple[str, str]:
        """``(CallSid, tracker key)`` of a signed request.

        Raises:
            BadRequest: no valid ``CallSid`` or no ``From``.
        """
        call_sid = params.get("CallSid", "")
        if not CALL_SID.fullmatch(call_sid):
            raise BadRequest("CallSid is missing or malformed")
        from_number = params.get("From", "").strip()
        if not from_number:
            raise BadRequest("From is missing")
        return call_sid, caller_key(from_number, call_sid)

    # --- TwiML -----------------------------------------------------------------

    def _url(self, request: Request, query: str = "") -> str:
        """The public URL of the webhook (``query`` appended)."""
        assert self.public_base is not None
        path = request.path.rsplit("/", 1)[0] + "/webhook"
        return public_url(self.public_base, path, query)

    def gather(self, request: Request, texts: list[str], stage: str) -> VoiceResponse:
        """``texts`` in a Gather, then a Redirect to ``webhook?stage=<stage>``."""
        twiml = VoiceResponse()
        gather = Gather(
            input="speech dtmf",
            action=self._url(request),
            method="POST",
            language=self.language,
            speech_timeout="auto",
            hints=HINTS,
            barge_in=True,
        )
        for text in texts:
            gather.say(text, voice=self.voice)
        twiml.append(gather)
        twiml.redirect(self._url(request, f"stage={stage}"), method="POST")
        return twiml

    def goodbye(self, texts: list[str]) -> VoiceResponse:
        """``texts`` spoken, then ``<Hangup/>``."""
        twiml = VoiceResponse()
        for text in texts:
            twiml.say(text, voice=self.voice)
        twiml.hangup()
        return twiml

    def reprompt(
        self, request: Request, state: CallState, first: str, stage: str
    ) -> VoiceResponse:
        """``first``, the last prompt again (or a generic one), in a Gather."""
        return self.gather(request, [first, *(state.prompt or [GENERIC_PROMPT])], stage)

    def answer(
        self, request: Request, state: CallState, result: TurnResult, to: str
    ) -> VoiceResponse:
        """The TwiML of a finished turn (see the module docstring)."""
        if result.failed:
            return self.reprompt(request, state, FAILED_TEXT, STAGE_SILENCE1)
        texts = spoken_texts(result.messages, result.choices)
        state.prompt = texts
        state.expect_order = any(ORDER_QUESTION.search(t) for t in texts)
        if result.handoff:
            if self.agent_number and agents_available(hours=self.hours):
                twiml = VoiceResponse()
                for text in texts:
                    twiml.say(text, voice=self.voice)
                twiml.dial(self.agent_number, caller_id=self.from_number or to)
                return twiml
            return self.goodbye([*texts, HANDOFF_GOODBYE])
        return self.gather(request, texts, STAGE_SILENCE1)

    # --- turns -----------------------------------------------------------------

    def _after_turn(self, key: str, buttons: list[dict]) -> tuple[list[dict], bool]:
        """Remember the offered choices; tell whether a handoff is open (thread)."""
        factory = self.session_factory
        assert factory is not None

        def work(session: Session) -> tuple[list[dict], bool]:
            choices = remember_choices(session, tracker_key=key, buttons=buttons)
            handoff = open_handoff_for_key(session, tracker_key=key)
            conversation = latest_conversation(session, tracker_key=key)
            current = conversation is not None and conversation.status == "open"
            return choices, handoff is not None and current

        return run_unit(factory, work)

    async def run_turn(
        self, key: str, text: str, call_sid: str, on_new_message: OnNewMessage
    ) -> TurnResult:
        """Run one Rasa turn and the store work after it; never raises."""
        output = VoiceOutput()
        message = UserMessage(
            text,
            output,
            key,
            input_channel=CHANNEL,
            message_id=f"{CHANNEL}:{uuid.uuid4().hex}",
            metadata={},
        )
        try:
            await on_new_message(message)
        except Exception:  # noqa: BLE001 - the caller hears an apology
            logger.exception("twilio_voice: call %s: the turn failed", call_sid)
            return TurnResult(output.messages, failed=True)
        buttons = last_buttons(output.messages)
        try:
            choices, handoff = await asyncio.to_thread(self._after_turn, key, buttons)
        except Exception:  # noqa: BLE001 - answer without choices or handoff
            logger.exception("twilio_voice: call %s: store unavailable", call_sid)
            choices, handoff = [], False
        return TurnResult(output.messages, choices, handoff)

    def start_turn(
        self,
        state: CallState,
        key: str,
        text: str,
        call_sid: str,
        on_new: OnNewMessage,
    ) -> PendingTurn:
        """Start a turn as a task kept by the call (and by the channel until done)."""
        task = asyncio.ensure_future(self.run_turn(key, text, call_sid, on_new))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        state.pending = PendingTurn(uuid.uuid4().hex, task)
        return state.pending

    async def await_turn(
        self,
        request: Request,
        state: CallState,
        turn: PendingTurn,
        params: dict[str, str],
    ) -> VoiceResponse:
        """Wait up to ``hold_after`` for the turn: its answer, a hold or goodbye."""
        call_sid = params["CallSid"]
        done, _ = await asyncio.wait({turn.task}, timeout=self.hold_after)
        if not done:
            if turn.holds >= self.max_holds:
                state.pending = None
                logger.warning("twilio_voice: call %s: turn too slow", call_sid)
                return self.goodbye([TOO_SLOW_TEXT])
            turn.holds += 1
            twiml = VoiceResponse()
            twiml.say(HOLD_TEXT, voice=self.voice)
            query = f"stage={STAGE_WAIT}&turn={turn.id}"
            twiml.redirect(self._url(request, query), method="POST")
            return twiml
        state.pending = None
        try:
            result = turn.task.result()
        except (asyncio.CancelledError, Exception):  # noqa: BLE001 - an apology
            result = TurnResult([], failed=True)
        return self.answer(request, state, result, params.get("To", ""))

    def caller_text(
        self, params: dict[str, str], key: str, state: CallState
    ) -> str | None:
        """What the caller said or pressed, as text for Rasa (None: nothing)."""
        digits = params.get("Digits")
        if digits is not None and digits.strip():
            if not DTMF.fullmatch(digits.strip()):
                return None
            payload = self._choice(key, digits.strip())
            if payload is not None:
                return payload
            expecting = EXPECT_ORDER_NUMBER if state.expect_order else None
            return digits_to_text(digits, expecting=expecting) or None
        speech = clean_text(params.get("SpeechResult") or "")
        speech = without_slashes(normalize_utterance(speech))
        if not speech:
            return None
        number = lone_number(speech)
        if number is not None:
            payload = self._choice(key, number)
            if payload is not None:
                return payload
        return speech[: self.max_message_chars]

    def _choice(self, key: str, number: str) -> str | None:
        factory = self.session_factory
        assert factory is not None

        def work() -> str | None:
            with factory() as session:
                return choice_payload(session, tracker_key=key, text=number)

        try:
            return retry_when_locked(work)
        except Exception:  # noqa: BLE001 - read as text instead
            logger.exception("twilio_voice: choices unavailable")
            return None

    async def webhook(
        self, request: Request, on_new_message: OnNewMessage
    ) -> HTTPResponse:
        """Handle one turn request of a call (see the module docstring)."""
        try:
            params = self.checked(request)
            call_sid, key = self.call_of(params)
        except BadRequest as error:
            return response.json({"error": str(error)}, status=error.status)
        stage = request.args.get("stage")
        if stage is not None and stage not in STAGES:
            return response.json({"error": "unknown stage"}, status=400)
        state = self.calls.state(call_sid)
        if stage == STAGE_SILENCE1:
            twiml = self.reprompt(request, state, SORRY_TEXT, STAGE_SILENCE2)
        elif stage == STAGE_SILENCE2:
            twiml = self.goodbye([SILENCE_GOODBYE])
        elif stage == STAGE_WAIT:
            turn_id = request.args.get("turn", "")
            pending = state.pending
            if (
                pending is None
                or pending.id != turn_id
                or not TURN_ID.fullmatch(turn_id)
            ):
                logger.info("twilio_voice: call %s: unknown turn", call_sid)
                twiml = self.reprompt(request, state, LOST_TEXT, STAGE_SILENCE1)
            else:
                twiml = await self.await_turn(request, state, pending, params)
        elif "SpeechResult" not in params and "Digits" not in params:
            turn = self.start_turn(state, key, START_TEXT, call_sid, on_new_message)
            twiml = await self.await_turn(request, state, turn, params)
        else:
            text = await asyncio.to_thread(self.caller_text, params, key, state)
            if text is None:
                twiml = self.reprompt(request, state, SORRY_TEXT, STAGE_SILENCE2)
            else:
                state.spoke = True
                turn = self.start_turn(state, key, text, call_sid, on_new_message)
                twiml = await self.await_turn(request, state, turn, params)
        return response.text(str(twiml), content_type="text/xml")

    # --- status callbacks -------------------------------------------------------

    def close_call(
        self, key: str, call_sid: str, status: str, spoke: bool | None
    ) -> str:
        """Close the key's open conversation once per call status (thread).

        ``spoke``: whether the caller said anything (None: unknown here, read
        from the stored transcript). Returns what happened, for the log.
        """
        factory = self.session_factory
        assert factory is not None

        def work() -> str:
            with factory() as session:
                fresh = claim_receipt(
                    session, channel=KEY_CHANNEL, external_id=f"{call_sid}:{status}"
                )
                if not fresh:
                    return "duplicate"
                conversation = latest_conversation(session, tracker_key=key)
                if conversation is None or conversation.status != "open":
                    session.rollback()  # unclaimed: a later try may find it
                    return NO_CONVERSATION
                if conversation.outcome == "escalated" or open_handoff_for_key(
                    session, tracker_key=key
                ):
                    outcome = "escalated"
                else:
                    said = spoke
                    if said is None:
                        rows = transcript(session, conversation_id=conversation.id)
                        said = sum(1 for r in rows if r.direction == "in") > 1
                    outcome = "self_served" if said else "abandoned"
                close_conversation(
                    session, conversation_id=conversation.id, outcome=outcome
                )
                session.commit()
                return outcome

        return retry_when_locked(work)

    async def status(self, request: Request) -> HTTPResponse:
        """Handle a call-status callback (see the module docstring)."""
        try:
            params = self.checked(request)
            call_sid, key = self.call_of(params)
        except BadRequest as error:
            return response.json({"error": str(error)}, status=error.status)
        status = params.get("CallStatus", "")
        if status not in FINAL_STATUSES:
            return response.empty()
        state = self.calls.pop(call_sid)
        spoke = state.spoke if state is not None else None
        try:
            done = await asyncio.to_thread(
                self.close_call, key, call_sid, status, spoke
            )
            # A caller who hangs up right after a turn can beat the contact
            # history's writer to the store: look again for a few seconds.
            for _ in range(CLOSE_RETRIES if state is not None else 0):
                if done != NO_CONVERSATION:
                    break
                await asyncio.sleep(CLOSE_RETRY_SECONDS)
                done = await asyncio.to_thread(
                    self.close_call, key, call_sid, status, spoke
                )
        except Exception:  # noqa: BLE001 - Twilio does not retry; the idle closer will
            logger.exception("twilio_voice: call %s: status not recorded", call_sid)
            return response.empty()
        logger.info("twilio_voice: call %s %s: %s", call_sid, status, done)
        return response.empty()

    def blueprint(self, on_new_message: OnNewMessage) -> Blueprint:
        """The health route, the turn webhook and the status callback."""
        module = inspect.getmodule(self)
        webhook = Blueprint(
            f"custom_webhook_{type(self).__name__}",
            module.__name__ if module else None,
        )

        @webhook.route("/", methods=["GET"])
        async def health(request: Request) -> HTTPResponse:
            return response.json({"status": "ok", "enabled": self.enabled})

        @webhook.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            return await self.webhook(request, on_new_message)

        @webhook.route("/status", methods=["POST"])
        async def status(request: Request) -> HTTPResponse:
            return await self.status(request)

        @webhook.listener("after_server_stop")
        async def cancel_turns(*_: Any) -> None:
            for task in list(self._tasks):
                task.cancel()

        return webhook
