"""Complaints: tell an unhappy customer's message from a neutral one, and count them.

The detector is a lexicon written for customer service, not a general
sentiment model: "my parcel is two weeks late and nobody helps me" carries no
negative word a general lexicon knows, while "how do I return a damaged item?"
is full of them and is no complaint. It scores grievance phrases (waiting,
nobody answers, third time), emotion words (furious, unacceptable) and complaint
words (complaint, manager), discounts neutralisers ("no problem", "not bad")
and policy questions ("what happens if ..."). Its precision and recall on the
labelled sets in ``data/eval/`` are measured by ``crm bench complaints`` and
held by ``tests/services/test_complaint_detector.py``.

A detected complaint is recorded once per conversation and problem as a
``system`` interaction with ``meta.kind == "complaint"``, so managers can count
complaints by problem (``complaint_counts``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput
from crm_store.models import Interaction, utcnow
from crm_store.services.interactions import NewInteraction, append_interaction

PROBLEMS = (
    "late_delivery",
    "lost_parcel",
    "damaged",
    "wrong_item",
    "refund",
    "billing",
    "no_response",
    "staff",
    "bot",
    "quality",
    "general",
)
THRESHOLD = 2.0
MAX_TEXT = 2000


def _rx(*patterns: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)


# (pattern, weight): each pattern counts once per message.
SIGNALS: tuple[tuple[re.Pattern[str], float], ...] = (
    # Emotion and judgement.
    (
        _rx(
            r"\b(furious|livid|angry|outraged|fuming|disgusted|appalled|irritated|annoyed)\b",
            r"\bfed up\b",
            r"\b(sick|tired) (and tired )?of\b",
            r"\bfrustrat\w*",
            r"\bdisappoint\w*",
            r"\bunacceptable\b",
            r"\b(ridiculous|absurd|outrageous|disgrace\w*|shameful|shocking|appalling)\b",
            r"\b(terrible|horrible|awful|dreadful|pathetic|useless|hopeless|rubbish|crap|crappy|shite?)\b",
            r"\bworst\b",
            r"\bincompetent\b|\bamateurs?\b",
            r"\b(scam|rip-?off|fraud|con artists?|thie(f|ves))\b",
            r"\bnightmare\b",
            r"\b(is|are|what|such|absolute|complete|total|bad|you'?re) (a )?joke\b",
            r"\bwaste of (my )?(time|money)\b",
            r"\bnever (again|order(ing)? (from|with) you)\b",
            r"\b(not|never) (happy|satisfied|pleased|impressed)\b",
            r"\b(unhappy|dissatisfied|upset)\b",
            r"\bwtf\b|\bffs\b|\bomg\b",
            r"\bseriously\?",
            r"\bi can'?t believe\b",
        ),
        2.0,
    ),
    # Complaint words and escalation threats.
    (
        _rx(
            r"\bcomplain\w*",
            r"\bgrievance\b",
            r"\b(speak|talk) to (a|your|the) (manager|supervisor|boss)\b",
            r"\bmanager\b",
            r"\b(lawyer|solicitor|legal action|ombudsman|consumer (rights|authority|protection))\b",
            r"\bcharge ?back\b",
            r"\b(trustpilot|bad review|negative review|report you)\b",
            r"\bescalat\w*",
        ),
        2.0,
    ),
    # Grievance situations.
    (
        _rx(
            r"\b(no ?one|nobody|no-one)\b.{0,30}\b(help|answer|repl|respond|call|care|got back|get back|listen)\w*",
            r"\bno (reply|response|answer|one answers)\b",
            r"\b(never|still (haven'?t|hasn'?t|not|no)|didn'?t|did not|have not|haven'?t) (got|gotten|received|heard|arrived|came|come|had)\b.{0,25}\b(back|reply|answer|response|refund|parcel|package|order|money|item)",
            r"\bstill (waiting|not|no|nothing|hasn'?t|haven'?t|isn'?t|hasnt|havent)\b",
            r"\b(waiting|waited) (for )?(ages|weeks|days|so long|forever|over a week|more than a week|\d+ (days|weeks))\b",
            r"\b(\d+|two|three|four|five|six|several|many) (weeks?|days?) (late|overdue|now|already|and (still|nothing|no))\b",
            r"\b(third|3rd|fourth|4th|fifth|5th|umpteenth|\d+(th|rd)) time\b",
            r"\b(how many times|again and again|over and over|every time)\b",
            r"\bkeep (asking|telling|getting|sending|saying)\b",
            r"\b(charged|billed|paid) (me )?(twice|double|two times)\b|\bdouble[- ]charged\b|\bovercharg\w*",
            r"\b(you|they|courier|driver|dhl|postnl|ups)\b.{0,20}\b(lost|broke|damaged|ruined|threw|left it)\b",
            r"\bignor(ed|ing)\b",
            r"\b(rude|unhelpful|unprofessional|impolite|arrogant|hung up)\b",
            r"\b(not|isn'?t|wasn'?t|is not|was not) what i (ordered|paid for|asked for)\b",
            r"\b(where('?s| is)|still no|haven'?t (got|received)) (my )?(money|refund)\b",
            r"\bpoor (service|quality|communication)\b|\bbad (service|quality|experience|communication)\b",
            r"\b(fell apart|broke after|stopped working after|cheap(ly made)?|flimsy)\b",
            r"\b(stupid|dumb|useless|pointless) (bot|robot|machine|chat)\b",
            r"\b(not|doesn'?t|don'?t|isn'?t) (help(ing|ful)?|understand(ing)?)\b.{0,15}\b(at all|me)?",
            r"\b(this|your) (bot|chat|service|company|shop)\b.{0,15}\b(is|are|was)\b.{0,10}\b(bad|slow|awful|terrible|useless|joke|worst|rubbish|pathetic)\b",
            r"\bwhat a (joke|mess|shambles|farce)\b",
        ),
        2.0,
    ),
    # Facts of a failed order or service, told as a grievance.
    (
        _rx(
            r"\b(arrived|came|arrive|is|was|were|got (it|them)|turned up)\b.{0,30}\b(broken|smashed|shattered|cracked|crushed|dented|scratched|in (bits|pieces)|wet|torn|damaged|faulty|defective)\b",
            r"\b(a|with|has) (deep )?(dent|scratch|crack|hole|stain)\b|\bwater damage\b",
            r"\b(box|parcel|package) (was|is) (crushed|damaged|open|soaked)\b",
            r"\b(got|received|sent( me)?|came with|had)\b.{0,50}\b(instead of|not mine|some(one|body) else'?s)\b",
            r"\bordered (a |an |the )?.{0,40}\b(and|but) (got|received|you sent)\b|\bmix-?up\b",
            r"\b(correct|right) (item|size|one)\b.{0,20}\b(urgent|please|asap)|\bnot mine\b",
            r"\b(charged|billed|took|take|taken)\b.{0,40}\b(twice|2x|double|two times|although|but|too much|instead)\b",
            r"\b(not|isn'?t) (fair|acceptable|good enough)\b|\bthat'?s not (fair|ok)\b",
            r"\b(full )?money back\b|\bmoney is gone\b|\bcharged (me )?(shipping|for)\b",
            r"\b(finally|more than patient|been (very )?patient|high time|about time)\b",
            r"\bnot (arrive|arrived|come|came|here|delivered)( yet)?\b|\bhasn'?t (arrived|come|shown up)\b",
            r"\b(supposed|promised|meant) to (arrive|be|come)\b|\bpromised\b",
            r"\bwaiting since\b|\b(it'?s|its|it has) been (\d+|two|three|four|five|six|ten|several) (days|weeks)\b",
            r"\bhas not moved\b|\bhasn'?t moved\b|\bno (update|tracking)\b",
            r"\b(vanished|disappeared|gone missing|is gone|into thin air)\b|\bnothing (at|on) my door",
            r"\b(says|said|shows|marked( as)?) delivered\b|\bwho (took|stole)\b|\bnobody rang\b",
            r"\bnot a single (reply|answer|response|word)\b|\bon hold\b|\bnobody picked up\b",
            r"\bis (any(one|body)|some(one|body)) (even |actually )?(reading|listening)\b",
            r"\b(my )?(second|third|fourth|fifth|\d+(st|nd|rd|th)) (e-?mail|message|call|time|replacement|mix-?up|complaint)\b",
            r"\b(swore|swearing|shouted|yelled|lazy|rude)\b",
            r"\byou'?re (useless|not listening|not helping|a joke)\b|\bnot listening\b",
            r"\b(that'?s )?not what i (said|meant|asked)\b|\bare you (even|actually) (reading|listening)\b",
            r"\bi (already|just) (gave|told|said|sent)\b|\bsame (thing|menu|question|answer|message)\b",
            r"\b(you )?(don'?t|do not|doesn'?t) understand\b",
            r"\b(smells|burning|stopped working|broke (after|within)|only (a|one|two) (week|month)s? old)\b",
            r"\blet ?down\b|\b(expected|expect) (far |much |a lot )?better\b|\bhow hard can it be\b",
            r"\bsort (it|this) out\b|\bmake (this|it) right\b|\bthe principle\b|\bstress(ing|ed)\b",
            r"\b(great|brilliant|fantastic|lovely|wonderful|love)\b[,.!]? .{0,40}\b(again|waiting|delayed|broken|another|nothing|vanished)\b",
            r"\binteresting choice\b|\bthanks for nothing\b|\bdiss?apoint\w*",
        ),
        2.0,
    ),
    # Frustration and loss of trust.
    (
        _rx(
            r"\bforever+\b|\btakes? so long\b|\bages\b|\bunbelievable\b|\bunreal\b",
            r"\bnot (satisf\w*|honest|professional|normal|good)\b|\bunnormal\b|\b(doesn'?t|does not) feel (normal|right)\b",
            r"\b(junk|garbage|trash)\b|\blosing (my )?patience\b|\b(lost|run out of) patience\b",
            r"\b(heard|got) nothing( back)?\b|\bnothing but\b|\bgoing (round )?in circles\b",
            r"\bnever (call(s|ed)?|ring|rang|got|get|write|wrote) back\b|\bcut off\b",
            r"\bnever (got|received|ordered|placed|asked for)\b|\b(don'?t|do not) recogni[sz]e\b",
            r"\b(don'?t|do not|can'?t) believe\b|\bruined\b|\bsnapped\b|\bleaked\b",
            r"\b(laughed|kicked|threw|thrown|dumped)\b|\blike (i am|i'?m) (stupid|an idiot|a child)\b",
            r"\bcheeky\b|\bcorrected\b|\bautomatic (replies|reply|answers)\b",
            r"\b(shop(ping)?|go(ing)?|buy(ing)?) elsewhere\b|\bloyal customer\b|\bgone downhill\b",
            r"\bwhere (on earth|the hell|the heck)\b|\bno idea where\b|\bneither do you\b",
            r"\bno refund yet\b|\binstead of (my|a) (money|refund)\b|\bnot what (your|the) (policy|website|site) says\b",
            r"\b(it'?s|its) not\.|\bi wait\b.{0,20}\b(since|for)\b|\btake so long\b|\b(expected|said) (tomorrow|monday|today)\b",
        ),
        2.0,
    ),
    # Weak cues: shouting, repeated marks, "late", "again".
    (_rx(r"[!?]{2,}", r"(\b[A-Z]{3,}\b.*){2,}"), 1.0),
    (_rx(r"\blate\b", r"\bagain\b", r"\bstill\b", r"\bwhere the hell\b"), 0.5),
)

# Neutralisers: the message says things are fine, or asks about a policy.
NEUTRAL = _rx(
    r"\bno (problem|worries|complaints?|rush)\b",
    r"\bcan'?t complain\b|\bnothing to complain\b|\bnot a complaint\b",
    r"\b(what if|if my|if the|if an?|if i'?m|in case)\b",
    r"\b(works|worked) (perfectly|fine|great)\b|\bthank(s| you) for the (quick|fast|great|speedy)\b|\ball good\b",
    r"\bnot (bad|a problem|an issue|angry|upset|complaining)\b",
    r"\bnothing (is |was )?wrong\b",
    r"\b(don'?t|do not) worry\b",
    r"\b(what happens|what if|what do i do|how do i|how can i|can i|do you) .{0,40}\b(late|lost|damaged|broken|wrong|refund)\b",
)
NEUTRAL_WEIGHT = 2.5

PROBLEM_CUES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "general",
        _rx(
            r"\b(shop(ping)? elsewhere|gone downhill|loyal customer|formal complaint)\b"
        ),
    ),
    (
        "bot",
        _rx(
            r"\b(keep|kept) asking\b|\basked (me )?(that|this) already\b|\bgoing (round )?in circles\b|\bnot what i asked\b|\btyped it\b",
            r"\b(bot|robot|machine|chatbot|automated|ai)\b",
            r"\byou'?re (useless|not listening)\b|\bnot listening\b|\bnot what i said\b|\bi (already|just) (gave|told) you\b|\bsame menu\b|\bare you even\b|\byou (don'?t|do not) understand\b",
        ),
    ),
    (
        "billing",
        _rx(
            r"\b(bank statement|my card|credit card|payment on|money (two|2) times?|take money|took money)\b",
            r"\b(charged|billed|invoice|overcharg\w*|double[- ]charged|payment reminders?|paid twice|unpaid)\b",
            r"\b(take|took|taken) .{0,20}from my account\b",
        ),
    ),
    ("refund", _rx(r"\brefund\w*", r"\bmoney back\b", r"\bmy money\b")),
    (
        "damaged",
        _rx(
            r"\b(snapped|leaked|ruined|shattered|chipped)\b",
            r"\b(broken|broke|damaged|cracked|smashed|shattered|dented|dent|faulty|defective|torn|scratch(ed)?|crushed|in bits)\b",
        ),
    ),
    (
        "wrong_item",
        _rx(
            r"\b(wrong model|you sent the|sent (me )?the (wrong|little|small|big)|random \w+ in (there|it)|never ordered)\b",
            r"\bwrong (item|size|colou?r|product|order|thing)\b",
            r"\bnot what i (ordered|paid for)\b",
            r"\binstead of\b|\bnot mine\b|\bmix-?up\b|\b(correct|right) item\b|\bsome(one|body) else'?s\b",
            r"\bordered\b.{0,40}\b(got|received|sent me)\b",
        ),
    ),
    (
        "lost_parcel",
        _rx(
            r"\b(deliverd|delivered)\b.{0,60}\b(never (received|got)|not|empty|no idea)\b|\bno idea where\b|\bwhere on earth is it\b",
            r"\b(lost|missing|never (arrived|came|showed up)|stolen|disappeared|vanished|gone|who took|nothing at my door)\b",
            r"\b(says|said|shows|marked( as)?|was) delivered\b",
        ),
    ),
    (
        "staff",
        _rx(
            r"\b(agent|courier|driver|guy|man|woman|lady|support) (on the phone |from support |who delivered )?(was|kicked|threw|talk\w*|said|told|refused|laughed)\b|\bbehaviou?r of\b|\b(the guy|the man|he|she) (threw|kicked|laughed|swore)\b",
            r"\b(rude|swore|shouted|yelled|lazy|delivery (guy|man|person)|staff|employee|hung up)\b",
            r"\b(courier|driver|agent)\b.{0,30}\b(rude|swore|shout|yell|lazy|didn'?t|don'?t|never|threw|left)\w*",
        ),
    ),
    (
        "no_response",
        _rx(
            r"\b(any|a) (reply|response|answer)\b|\bautomatic repl\w*|\bcut off\b|\bcall (me )?back\b|\b(sent|written|rung|called) (you )?(\d+|two|three|four|five|several|many) (times|e-?mails?|messages?)\b|\bsilence\b",
            r"\bcall ?back\b|\bon hold\b|\bnobody picked up\b|\bnot a single (reply|answer)\b|\bis any(one|body) (there|reading)\b|\b(e-?mail|message)s? about\b",
            r"\b(no ?one|nobody|no-one)\b.{0,30}\b(answer|repl|respond|call|got back|get back)\w*",
            r"\bno (reply|response|answer)\b",
            r"\b(ignor\w+|on hold|waiting for (a )?(reply|answer|response))\b",
            r"\b(e-?mails?|messages?|calls?)\b.{0,20}\b(unanswered|ignored|no reply)\b",
        ),
    ),
    (
        "late_delivery",
        _rx(
            r"\b(due|meant to be here|expected tomorrow|take so long|when is my (stuff|order|parcel)|still (nothing|in transit|processing|hasn'?t shipped)|actually arrive|still says)\b|\b(wait|waiting|waited) (since|for)?\s?\d+ (days|weeks)\b",
            r"\b(supposed|promised|meant) to (arrive|come)\b|\bpromised\b|\bwhere is (my )?(order|parcel|package)\b|\bstill no (parcel|package|order)\b|\b(it'?s|its) been \d+ days\b|\bhas not moved\b|\bturned up\b.{0,30}\bafter\b|\bnot (arrive|arrived)\b|\bwaiting since\b",
            r"\b(late|delay\w*|overdue|still (not|hasn'?t|haven'?t) (arrived|come|here|delivered)|(weeks?|days?) (late|and still|now|already)|where is my (order|parcel|package)|not (arrived|delivered|here) yet|still waiting)\b",
        ),
    ),
    (
        "quality",
        _rx(
            r"\b(died|broke the (second|first)|(second|first|third) time i used|junk|sticks|thinner than|sheds|than described)\b",
            r"\b(quality|cheap|flimsy|fell apart|stopped working|poor|badly made|smells|burning)\b",
        ),
    ),
)


@dataclass(frozen=True)
class ComplaintSignal:
    """A message read as a complaint: its score and the problem it names."""

    score: float
    problem: str


def complaint_score(text: str) -> float:
    """Return the complaint score of a message (``THRESHOLD`` and up: a complaint)."""
    text = text[:MAX_TEXT]
    score = sum(weight for pattern, weight in SIGNALS if pattern.search(text))
    if NEUTRAL.search(text):
        score -= NEUTRAL_WEIGHT
    return score


def problem_of(text: str) -> str:
    """Return the problem a complaint is about (one of ``PROBLEMS``)."""
    text = text[:MAX_TEXT]
    for problem, pattern in PROBLEM_CUES:
        if pattern.search(text):
            return problem
    return "general"


def detect_complaint(text: object) -> ComplaintSignal | None:
    """Return the complaint in a customer's message, or None for anything else."""
    if not isinstance(text, str) or not text.strip():
        return None
    score = complaint_score(text)
    if score < THRESHOLD:
        return None
    return ComplaintSignal(score=score, problem=problem_of(text))


def record_complaint(
    session: Session,
    *,
    conversation_id: str,
    channel: str,
    problem: str,
    customer_id: str | None = None,
    source: str = "lexicon",
    at: dt.datetime | None = None,
) -> bool:
    """Record a complaint on the contact history, once per conversation and problem.

    Returns True when it was recorded now, False when it was recorded before.

    Raises:
        InvalidInput: unknown problem or channel.
    """
    if problem not in PROBLEMS:
        raise InvalidInput(f"unknown complaint problem {problem!r}")
    return append_interaction(
        session,
        item=NewInteraction(
            event_id=f"complaint:{conversation_id}:{problem}"[:128],
            channel=channel,
            direction="in",
            author="system",
            customer_id=customer_id,
            conversation_id=conversation_id,
            intent="complain",
            occurred_at=at or utcnow(),
            meta={"kind": "complaint", "problem": problem, "source": source},
        ),
    )


def complaint_counts(
    session: Session, *, since: dt.datetime, until: dt.datetime | None = None
) -> dict[str, int]:
    """Count recorded complaints by problem between ``since`` and ``until`` (UTC)."""
    stmt = select(Interaction.meta).where(
        Interaction.author == "system",
        Interaction.intent == "complain",
        Interaction.occurred_at >= since,
    )
    if until is not None:
        stmt = stmt.where(Interaction.occurred_at < until)
    counts: Counter[str] = Counter()
    for meta in session.execute(stmt).scalars():
        if isinstance(meta, dict) and meta.get("kind") == "complaint":
            counts[str(meta.get("problem", "general"))] += 1
    return dict(counts)
