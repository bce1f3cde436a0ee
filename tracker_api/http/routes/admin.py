"""``/admin/accounts``: what ``tracker-api accounts`` does, over HTTP, for the ``tracker``
login of ``TRACKER_PASSWORD_FILE`` only (docs/adr/0019-account-management.md).

- Without a password file there is no login to check: the admin API is off, and every
  request to it is 403 saying so (not 404, which an unknown account answers).
- The login is checked before anything else of the request is read, its body included,
  so who may not manage accounts learns nothing, not even which parameter is wrong. No
  or a wrong login is 401 with ``WWW-Authenticate``, any other login 403.
- The rules are ``service.account_admin``'s, the CLI's: the same ids, names, no-ops and
  refusals. A change made here is dropped from this worker's account cache at once;
  the other workers see it within ``TRACKER_ACCOUNT_CACHE_TTL``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Path, Query, Request, Response, Security
from fastapi.routing import APIRoute
from fastapi.security import HTTPBasic
from pydantic import ConfigDict, Field
from sqlalchemy.exc import SQLAlchemyError

from tracker_api.errors import (
    AccountHasEvents,
    AccountNotFound,
    DatabaseUnavailable,
    LoginForbidden,
    LoginRequired,
    TrackerError,
    openapi_responses,
)
from tracker_api.http.auth import SERVICE_LOGIN
from tracker_api.http.runtime import runtime
from tracker_api.service.account_admin import (
    NAME_HELP,
    AccountAdmin,
    AccountChange,
    AccountDetail,
    AccountPage,
    AccountRemoval,
    Model,
)
from tracker_contract.ids import ACCOUNT_ID_PATTERN

T = TypeVar("T")
MAX_LIMIT = 10_000


class AdminDisabled(LoginForbidden):
    detail = "The admin API is off: it needs TRACKER_PASSWORD_FILE (its tracker login)"
    when = "No TRACKER_PASSWORD_FILE: the admin API is off"


class AdminLoginRequired(LoginRequired):
    detail = "Login required: HTTP Basic with the tracker login of the MQTT password file"
    when = "No login, or a wrong one"


class AdminForbidden(LoginForbidden):
    detail = "Only the tracker login may manage accounts"
    when = "A login other than tracker"


def require_tracker_login(request: Request) -> None:
    """The one check of every admin request, made before FastAPI reads anything else."""
    auth = runtime(request).logins
    if auth is None:
        raise AdminDisabled()
    try:
        user = auth.login(request.headers.get("authorization"))
    except LoginRequired:
        raise AdminLoginRequired() from None
    if user != SERVICE_LOGIN:
        raise AdminForbidden()


class AdminRoute(APIRoute):
    """A route that checks the login first: a dependency would come after FastAPI parsed
    the body, and a stranger would learn from its 422s."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            require_tracker_login(request)
            return await handler(request)

        return checked


# Declares HTTP Basic in the OpenAPI schema (the docs' "Authorize"); the check is above.
BASIC = HTTPBasic(auto_error=False, description="The tracker login of TRACKER_PASSWORD_FILE")
router = APIRouter(
    prefix="/admin", tags=["admin"], route_class=AdminRoute, dependencies=[Security(BASIC)]
)

LOGIN_ERRORS = (AdminDisabled, AdminLoginRequired, AdminForbidden, DatabaseUnavailable)
INVALID: dict[int | str, dict[str, Any]] = {
    422: {
        "description": "Invalid account id or name (`detail` says which rule), or a parameter "
        "or body the schema does not allow"
    }
}


def responses(*errors: type[TrackerError]) -> dict[int | str, dict[str, Any]]:
    return {**openapi_responses(*LOGIN_ERRORS, *errors), **INVALID}


class NewAccount(Model):
    model_config = ConfigDict(populate_by_name=False, extra="forbid")  # camelCase, no more

    account_id: str = Field(description=f"`{ACCOUNT_ID_PATTERN}`", examples=["kitchen"])
    name: str | None = Field(
        None,
        description=f"{NAME_HELP}; default: the id. Given for an existing account: renames it",
        examples=["Kitchen"],
    )


class AccountUpdate(Model):
    model_config = ConfigDict(populate_by_name=False, extra="forbid")  # camelCase, no more

    name: str | None = Field(None, description=f"A new name: {NAME_HELP}")
    active: bool | None = Field(None, description="false: its events are refused (403)")


AccountId = Annotated[str, Path(description=f"`{ACCOUNT_ID_PATTERN}`")]


async def run(request: Request, operation: Callable[[AccountAdmin], T], changes: str = "") -> T:
    """``operation`` on the app's database in a worker thread; ``changes`` names the
    account it may change, which this worker's account cache then forgets."""
    admin = AccountAdmin(runtime(request).engine)
    try:
        return await asyncio.to_thread(operation, admin)
    except SQLAlchemyError as error:
        raise DatabaseUnavailable() from error
    finally:
        if changes:
            runtime(request).service.accounts.forget(changes)


@router.get(
    "/accounts",
    response_model=AccountPage,
    response_description="A page of accounts",
    responses=responses(),
)
async def list_accounts(
    request: Request,
    active: Annotated[
        bool | None, Query(description="Only active (true) or inactive (false) accounts")
    ] = None,
    after: Annotated[str | None, Query(description="`next` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Accounts per page")] = 1000,
) -> AccountPage:
    """Accounts in id order, paged (`after`: the previous page's `next`)."""
    return await run(request, lambda admin: admin.page(after, limit, active))


CREATED: dict[int | str, dict[str, Any]] = {
    201: {"description": 'Created (`changes`: `["created"]`)'},
    200: {
        "description": "It exists already: left as it is (`changes`: `[]`), or renamed",
        "model": AccountChange,
    },
}


@router.post(
    "/accounts",
    status_code=201,
    response_model=AccountChange,
    responses={**CREATED, **responses()},
)
async def add_account(request: Request, body: NewAccount, response: Response) -> AccountChange:
    """Add an active account; adding one that exists changes nothing (200), unless
    `name` is another, which renames it."""
    change = await run(
        request, lambda admin: admin.add(body.account_id, body.name), body.account_id
    )
    if "created" not in change.changes:
        response.status_code = 200
    return change


@router.get(
    "/accounts/{account_id}",
    response_model=AccountDetail,
    response_description="The account",
    responses=responses(AccountNotFound),
)
async def show_account(request: Request, account_id: AccountId) -> AccountDetail:
    """One account, with how many archived events it has."""
    return await run(request, lambda admin: admin.show(account_id))


@router.patch(
    "/accounts/{account_id}",
    response_model=AccountChange,
    response_description="Changed as asked (`changes`), or it was so already (`[]`)",
    responses=responses(AccountNotFound),
)
async def update_account(
    request: Request, account_id: AccountId, body: AccountUpdate
) -> AccountChange:
    """Rename and/or (de)activate; what is so already is left alone (`changes` says what
    was done). Every tracker refuses a deactivated account's events (403) within
    TRACKER_ACCOUNT_CACHE_TTL."""
    return await run(
        request, lambda admin: admin.update(account_id, body.name, body.active), account_id
    )


@router.delete(
    "/accounts/{account_id}",
    response_model=AccountRemoval,
    response_description="Removed, with its archived events when forced (`deletedEvents`)",
    responses=responses(AccountNotFound, AccountHasEvents),
)
async def remove_account(
    request: Request,
    account_id: AccountId,
    force: Annotated[
        bool, Query(description="Remove it even with archived events, and delete them too")
    ] = False,
) -> AccountRemoval:
    """Remove an account. One with archived events is refused (409) unless `force`,
    which deletes them with it; to keep them, deactivate it instead."""
    return await run(request, lambda admin: admin.remove(account_id, force), account_id)
