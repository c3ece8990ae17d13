"""The web opt-out pages behind ``{optout_url}`` (gateway.consent.link makes the tokens).

``GET /o/TOKEN`` shows a plain page that asks to confirm: link scanners and previews fetch
links without a person, so opening one changes nothing. ``POST /o/TOKEN`` (the page's button)
opts the subscriber out of the campaign (scope ``campaign:NAME``, or ``business:NAME`` while
the campaign's business has revoke-all in effect; actor ``link``), through the
daemon's own store, so the next MT is refused at once and the change is in the audit trail. A
malformed, forged or expired token, or one for a campaign no longer configured, changes
nothing and gets a page that says so and tells how to opt out by SMS instead. A store that
fails is said plainly (503): nothing was recorded, try again.

The pages are served on their own listener (``[optout_link] listen``), meant to sit behind the
reverse proxy that terminates TLS for ``base_url``: never on the admin API's port.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Final

from gateway.admin.http import HttpServer, Request, Response
from gateway.consent.campaign import CampaignDirectory
from gateway.consent.link import Claim, LinkSigner, Refusal, day_number
from gateway.consent.model import Actor, ConsentState, Scope, ScopeKind
from gateway.consent.policy import revoke_all_scope
from gateway.store.base import ConsentStore, StoreError
from gateway.store.staff import set_state
from gateway.telemetry import logs
from gateway.telemetry.metrics import Metrics

log = logs.get_logger()

PATH_PREFIX: Final = "/o/"
HTML: Final = "text/html; charset=utf-8"
# No scripts, no third-party anything, not framed, not cached, no referrer leaving the page.
HEADERS: Final[Mapping[str, str]] = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_STYLE: Final = (
    "body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;"
    "line-height:1.5;color:#222}h1{font-size:1.4rem}"
    "button{font-size:1.1rem;padding:.6rem 1.4rem;border:0;border-radius:.3rem;"
    "background:#b00020;color:#fff;cursor:pointer}"
)


def link_day() -> int:
    """Today as link expiry counts it (UTC)."""
    return day_number(datetime.now(UTC).date())


def _page(status: int, title: str, body: str) -> Response:
    text = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return Response(status=status, body=text.encode("utf-8"), content_type=HTML, headers=HEADERS)


def _ending(subscriber: str) -> str:
    return f"the number ending {subscriber[-2:]}"


class OptOutPages:
    """The two routes of one gateway's opt-out link; ``campaigns`` gives the current campaigns
    (they change on reload)."""

    def __init__(
        self,
        *,
        signer: LinkSigner,
        store: ConsentStore,
        campaigns: Callable[[], CampaignDirectory],
        instance: str,
        metrics: Metrics | None = None,
        day: Callable[[], int] = link_day,
    ) -> None:
        self.signer = signer
        self.store = store
        self.campaigns = campaigns
        self.instance = instance
        self.metrics = metrics
        self.day = day
        self.server = HttpServer(
            {("GET", PATH_PREFIX + "*"): self.show, ("POST", PATH_PREFIX + "*"): self.confirm},
            name="optout-link",
        )

    def _claim(self, request: Request) -> Claim | Response:
        token = request.path[len(PATH_PREFIX) :]
        found = self.signer.read(token, self.day())
        if isinstance(found, Claim):
            return found
        self._count("refused", found.value)
        log.info(logs.OPTOUT_LINK_REFUSED, reason=found.value, method=request.method)
        if found is Refusal.EXPIRED:
            return _page(
                HTTPStatus.GONE,
                "This link has expired",
                "<p>Nothing was changed. To stop messages, reply <b>STOP</b> to the last "
                "message you received.</p>",
            )
        return _page(
            HTTPStatus.NOT_FOUND,
            "This link is not valid",
            "<p>Nothing was changed. Check that the whole link was opened, or reply "
            "<b>STOP</b> to the last message you received.</p>",
        )

    def _count(self, outcome: str, reason: str = "") -> None:
        if self.metrics is not None:
            self.metrics.optout_link_total.labels(outcome, reason).inc()

    def _brand(self, claim: Claim) -> str:
        campaign = self.campaigns().get(claim.campaign)
        return (campaign.brand if campaign is not None else "") or claim.campaign

    async def show(self, request: Request) -> Response:
        claim = self._claim(request)
        if isinstance(claim, Response):
            return claim
        self._count("shown")
        brand = html.escape(self._brand(claim))
        return _page(
            HTTPStatus.OK,
            f"Stop messages from {self._brand(claim)}?",
            f"<p>You will no longer receive messages from <b>{brand}</b> at "
            f"{_ending(claim.subscriber)}.</p>"
            '<form method="post"><button type="submit" id="confirm">Yes, stop these messages'
            "</button></form>",
        )

    async def confirm(self, request: Request) -> Response:
        claim = self._claim(request)
        if isinstance(claim, Response):
            return claim
        # A revocation through the business's web page is one like a STOP: under revoke-all
        # it reaches every campaign of the business.
        campaign = self.campaigns().get(claim.campaign)
        business = revoke_all_scope(campaign, time.time()) if campaign is not None else None
        try:
            change = await set_state(
                self.store,
                subscriber=claim.subscriber,
                scope=business or Scope(ScopeKind.CAMPAIGN, claim.campaign),
                state=ConsentState.OPTED_OUT,
                actor=Actor.LINK,
                reason="web opt-out link",
                instance=f"{self.instance}/link",
                by="optout-link",
            )
        except StoreError as exc:
            # Fail closed and say so: nothing was recorded; the person can try again.
            self._count("failed", "store")
            log.warning(logs.OPTOUT_LINK_FAILED, error=str(exc))
            return _page(
                HTTPStatus.SERVICE_UNAVAILABLE,
                "Please try again",
                "<p>Your request could not be recorded just now. Please try again in a "
                "minute, or reply <b>STOP</b> to the last message you received.</p>",
            )
        # Already opted out (or blocked, which opts out of everything): the same answer.
        self._count("confirmed" if change.changed else "unchanged")
        brand = html.escape(self._brand(claim))
        return _page(
            HTTPStatus.OK,
            "You are unsubscribed",
            f"<p>You will receive no more messages from <b>{brand}</b> at "
            f"{_ending(claim.subscriber)}.</p>",
        )
