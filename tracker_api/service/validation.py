"""The rules of an event's identifiers, as the 422s the API and ingest answer: light
enough for the seed and the login tools, which import no web framework or database."""

from __future__ import annotations

import re

from tracker_api.errors import InvalidRequest
from tracker_contract.ids import account_id_problem

EVENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


def check_account_id(account_id: str) -> None:
    """The one rule for account ids (``tracker_contract.ids.account_id_problem``), as the
    422 the API and ingest answer."""
    problem = account_id_problem(account_id)
    if problem is not None:
        raise InvalidRequest(problem)


def check_event_id(event_id: str) -> None:
    """The rule for eventIds: an ``Idempotency-Key`` header, an ``eventId`` field or parameter."""
    if EVENT_ID.fullmatch(event_id) is None:
        raise InvalidRequest(
            "Invalid Idempotency-Key / eventId: 1-128 characters from A-Z a-z 0-9 _ . : -"
        )
