"""FCC revoke-all (47 CFR 64.1200(a)(12)): the clarifying confirmation, derived from events.

Pure. The pending question is not kept anywhere of its own: it is the business-scope opt-out
event that carries ``clarify_until``, as long as it is the latest event of that scope and the
window is open. An answer (ALL, a list, a campaign) is a newer event of the scope, so it closes
the question; a window that ends unanswered leaves the opt-out for all, as the rule says.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway.consent.campaign import Campaign, Clarify
from gateway.consent.model import ConsentEvent, ConsentState, MatchType


def pending_clarification(
    events: Iterable[ConsentEvent], campaign: Campaign, now: float
) -> ConsentEvent | None:
    """The opt-out awaiting an answer among ``events`` (a subscriber's history, in append
    order) for ``campaign``'s business at wall time ``now``, or None."""
    scope = campaign.business_scope
    if scope is None:
        return None
    latest: ConsentEvent | None = None
    for event in events:
        if event.scope == scope.key:
            latest = event
    if latest is None or latest.clarify_until is None:
        return None
    if latest.state is not ConsentState.OPTED_OUT or now >= latest.clarify_until:
        return None
    return latest


def question_state(
    events: Iterable[ConsentEvent], business_key: str, now: float
) -> dict[str, Any] | None:
    """The latest question asked in ``business_key``'s scope and what became of it, for
    ``consent show``: asked when, open until, and answered / open / ended unanswered."""
    asked: ConsentEvent | None = None
    answer: ConsentEvent | None = None
    for event in events:
        if event.scope != business_key:
            continue
        if event.clarify_until is not None:
            asked, answer = event, None
        elif asked is not None and event.match is MatchType.CLARIFY and answer is None:
            answer = event
    if asked is None or asked.clarify_until is None:
        return None
    if answer is not None:
        outcome = "narrowed" if answer.state is ConsentState.UNKNOWN else "all"
        status = f"answered ({outcome}: {answer.words!r})"
    elif now < asked.clarify_until:
        status = "open"
    else:
        status = "ended unanswered: all kept"
    return {
        "asked_at": asked.at,
        "campaign": asked.campaign,
        "until": asked.clarify_until,
        "status": status,
    }


def choices(campaign: Campaign) -> tuple[str, ...]:
    """What an answer may name to narrow a revoke-all opt-out through ``campaign``: its lists,
    then the campaign itself."""
    return (*(lst.name for lst in campaign.lists), campaign.name)


def question(clarify: Clarify, language: str) -> str:
    """The question's template in ``language`` (the language of the opt-out word, as the
    keyword match says: ARRET -> "fr"), where the business has a text in it; else the default."""
    return dict(clarify.replies).get(language) or clarify.reply
