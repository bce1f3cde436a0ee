"""Account management: the rules ``tracker-api accounts`` and the admin API
(``/admin/accounts``) share, so both refuse, change and answer alike
(docs/adr/0019-account-management.md).

- Ids follow the one rule (``check_account_id``: 422, or the CLI's one line); names are
  1-200 printable characters without spaces at either end (they end up on terminals).
- Changes are idempotent: asking for what is there already changes nothing and says so
  (``changes`` is empty). Adding an id that exists is such a no-op unless a new name is
  given, which renames it.
- Removing an account with archived events deletes them too, so it is refused
  (``AccountHasEvents``) unless forced: an id given to a new tenant later must not
  come with the old one's history. Deactivating keeps both.

The calls run queries and block; the admin API runs them in a worker thread. What a
change means for events: the trackers' account caches notice it within
``TRACKER_ACCOUNT_CACHE_TTL`` (``service/accounts.py``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from sqlalchemy import Engine

from tracker_api.errors import AccountHasEvents, AccountNotFound, InvalidRequest
from tracker_api.service.validation import check_account_id
from tracker_api.storage import account_store as store
from tracker_api.storage.account_store import AccountRow
from tracker_contract.ids import ACCOUNT_ID_PATTERN

NAME_MAX = 200
NAME_HELP = f"1-{NAME_MAX} printable characters, without spaces at either end"
Change = Literal["created", "renamed", "activated", "deactivated", "removed"]


class Model(BaseModel):
    """JSON in camelCase, as events are."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True)


class AccountView(Model):
    account_id: str = Field(description=f"`{ACCOUNT_ID_PATTERN}`", examples=["42"])
    name: str = Field(description=NAME_HELP, examples=["Kitchen"])
    active: bool = Field(description="Whether its events are accepted (inactive: 403)")


class AccountDetail(AccountView):
    archived_events: int = Field(description="How many of its events the archive holds")


class AccountPage(Model):
    accounts: list[AccountView] = Field(description="In id order (as the database sorts text)")
    next: str | None = Field(description="`after` for the next page; null on the last one")


class AccountChange(Model):
    account: AccountView = Field(description="The account after the change")
    changes: list[Change] = Field(description="What this request changed; empty: nothing to do")


class AccountRemoval(AccountChange):
    account: AccountView = Field(description="The account as it was")
    deleted_events: int = Field(description="Its archived events deleted with it")


def check_name(name: str) -> None:
    """The rule for account names, as a 422 (the CLI shows its detail)."""
    if not 0 < len(name) <= NAME_MAX or not name.isprintable() or name != name.strip():
        raise InvalidRequest(f"Invalid account name: {NAME_HELP}")


def view(row: AccountRow) -> AccountView:
    return AccountView(account_id=row.account_id, name=row.name, active=row.active)


class AccountAdmin:
    """The operations on ``engine``'s accounts; each raises ``InvalidRequest`` for a bad id
    or name and ``AccountNotFound`` for an id that is not there (``add`` excepted)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _existing(self, account_id: str) -> AccountRow:
        row = store.get(self.engine, account_id)
        if row is None:
            raise AccountNotFound()
        return row

    def page(
        self, after: str | None = None, limit: int = 1000, active: bool | None = None
    ) -> AccountPage:
        """Accounts after the id ``after``, at most ``limit``; ``next`` continues."""
        rows = store.page(self.engine, after, limit + 1, active)  # one more: is there a next?
        following = rows[limit - 1].account_id if len(rows) > limit else None
        return AccountPage(accounts=[view(row) for row in rows[:limit]], next=following)

    def find(self, account_id: str) -> AccountView | None:
        check_account_id(account_id)
        row = store.get(self.engine, account_id)
        return None if row is None else view(row)

    def show(self, account_id: str) -> AccountDetail:
        check_account_id(account_id)
        row = self._existing(account_id)
        return AccountDetail(
            **view(row).model_dump(), archived_events=store.count_events(self.engine, account_id)
        )

    def add(self, account_id: str, name: str | None = None) -> AccountChange:
        """Create an active account (named after its id unless ``name`` is given); an
        existing one is left as it is, except for its name when a new one is given."""
        check_account_id(account_id)
        if name is not None:
            check_name(name)
        if store.insert(self.engine, AccountRow(account_id, name or account_id, True)):
            return AccountChange(account=view(self._existing(account_id)), changes=["created"])
        renamed = name is not None and store.set_name(self.engine, account_id, name)
        return AccountChange(
            account=view(self._existing(account_id)), changes=["renamed"] if renamed else []
        )

    def update(
        self, account_id: str, name: str | None = None, active: bool | None = None
    ) -> AccountChange:
        """Rename and/or (de)activate; what is already so is left alone."""
        check_account_id(account_id)
        if name is not None:
            check_name(name)
        changes: list[Change] = []
        if name is not None and store.set_name(self.engine, account_id, name):
            changes.append("renamed")
        if active is not None and store.set_active(self.engine, account_id, active):
            changes.append("activated" if active else "deactivated")
        return AccountChange(account=view(self._existing(account_id)), changes=changes)

    def remove(self, account_id: str, force: bool = False) -> AccountRemoval:
        """Delete the account; with archived events only when ``force``d, and then them
        too (``AccountHasEvents`` otherwise)."""
        check_account_id(account_id)
        row = self._existing(account_id)
        if not force:
            count = store.count_events(self.engine, account_id)
            if count:
                raise AccountHasEvents(account_id, count)
        # With events: the few the archive may have written since the count go too, since
        # an account that had none has no history to keep.
        removed, deleted = store.remove(self.engine, account_id, with_events=True)
        if not removed:  # removed by someone else meanwhile
            raise AccountNotFound()
        return AccountRemoval(account=view(row), changes=["removed"], deleted_events=deleted)
