"""``/admin/accounts`` in-process on a seeded SQLite file: who may use it, every answer
with its exact detail, what each change does to the database and to this worker's
account cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.helpers.api import database_to_repair
from tests.helpers.fakes import FakePublisher
from tracker_api.app import create_app
from tracker_api.config import load_settings
from tracker_api.http.routes.admin import AdminDisabled, AdminForbidden, AdminLoginRequired
from tracker_api.passwords import PasswordFile
from tracker_api.storage import account_store
from tracker_api.storage import event_store as archive

TRACKER = ("tracker", "svc-secret")
INVALID_ID = "Invalid account id: 1-64 characters from A-Z a-z 0-9 _ . -, starting with a "
INVALID_NAME = "Invalid account name: 1-200 printable characters, without spaces at either end"
EVERY_ROUTE = [
    ("GET", "/admin/accounts", None),
    ("POST", "/admin/accounts", {"accountId": "kitchen"}),
    ("GET", "/admin/accounts/1", None),
    ("PATCH", "/admin/accounts/1", {"active": False}),
    ("DELETE", "/admin/accounts/1", None),
]


@pytest.fixture(scope="module")
def written_password_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("admin") / "passwd"
    passwords = PasswordFile(path)
    for login, password in (TRACKER, ("reader", "pw-reader"), ("1", "pw-1")):
        passwords.set(login, password)
    passwords.save()
    return path


@pytest.fixture
def admin(
    database: tuple[str, Engine], written_password_file: Path, publisher: FakePublisher
) -> Iterator[TestClient]:
    # A long account cache TTL: whatever this worker notices at once, it was told.
    settings = load_settings(
        database_url=database[0], password_file=written_password_file, account_cache_ttl=60
    )
    with TestClient(create_app(settings, publisher, database[1])) as client:
        client.auth = TRACKER
        yield client


def call(
    client: TestClient, method: str, path: str, body: object = None, **kwargs: Any
) -> httpx.Response:
    content = None if body is None else orjson.dumps(body)
    headers = None if body is None else {"content-type": "application/json"}
    return client.request(method, path, content=content, headers=headers, **kwargs)


@pytest.mark.parametrize(("method", "path", "body"), EVERY_ROUTE)
def test_without_a_password_file_the_admin_api_is_off_and_says_so(
    client: TestClient, database: tuple[str, Engine], method: str, path: str, body: object
) -> None:
    response = call(client, method, path, body, auth=TRACKER)

    assert response.status_code == 403
    assert response.json() == {"detail": AdminDisabled.detail}
    assert account_store.get(database[1], "1") == account_store.AccountRow("1", "Active 1", True)
    assert account_store.get(database[1], "kitchen") is None


@pytest.mark.parametrize(("method", "path", "body"), EVERY_ROUTE)
def test_no_or_a_wrong_login_is_401_with_a_challenge_and_other_logins_are_403(
    admin: TestClient, database: tuple[str, Engine], method: str, path: str, body: object
) -> None:
    anonymous = call(admin, method, path, body, auth=None)
    wrong = call(admin, method, path, body, auth=("tracker", "guess"))
    reader = call(admin, method, path, body, auth=("reader", "pw-reader"))
    device = call(admin, method, path, body, auth=("1", "pw-1"))

    for refused in (anonymous, wrong):
        assert refused.status_code == 401
        assert refused.json() == {"detail": AdminLoginRequired.detail}
        assert refused.headers["www-authenticate"] == 'Basic realm="tracker", charset="UTF-8"'
    for refused in (reader, device):
        assert refused.status_code == 403
        assert refused.json() == {"detail": AdminForbidden.detail}
    assert account_store.get(database[1], "1") == account_store.AccountRow("1", "Active 1", True)
    assert account_store.get(database[1], "kitchen") is None


def test_the_login_is_checked_before_the_body_or_any_parameter(admin: TestClient) -> None:
    garbage = admin.post("/admin/accounts", content=b"{not json", auth=None)
    bad_limit = admin.get("/admin/accounts", params={"limit": 0}, auth=("reader", "pw-reader"))
    bad_id = admin.get("/admin/accounts/a%20b", auth=None)

    assert [garbage.status_code, bad_limit.status_code, bad_id.status_code] == [401, 403, 401]


def test_accounts_are_listed_in_id_order_in_pages_and_filtered_by_state(
    admin: TestClient,
) -> None:
    first = admin.get("/admin/accounts", params={"limit": 4}).json()
    second = admin.get("/admin/accounts", params={"limit": 4, "after": first["next"]}).json()
    inactive = admin.get("/admin/accounts", params={"active": "false"}).json()

    ids = [a["accountId"] for a in first["accounts"] + second["accounts"]]
    assert ids == ["1", "10", "2", "A_b-9", "acme.eu-1", "dormant"]
    assert (first["next"], second["next"]) == ("A_b-9", None)
    assert first["accounts"][0] == {"accountId": "1", "name": "Active 1", "active": True}
    assert inactive == {
        "accounts": [
            {"accountId": "10", "name": "Off 10", "active": False},
            {"accountId": "dormant", "name": "Off dormant", "active": False},
        ],
        "next": None,
    }


def test_adding_creates_once_then_changes_nothing_unless_given_another_name(
    admin: TestClient, publisher: FakePublisher
) -> None:
    unknown = admin.get("/kitchen", params={"data": "early"})  # cached as unknown: 404
    created = admin.post("/admin/accounts", json={"accountId": "kitchen", "name": "Kitchen"})
    again = admin.post("/admin/accounts", json={"accountId": "kitchen", "name": "Kitchen"})
    unnamed = admin.post("/admin/accounts", json={"accountId": "kitchen"})
    renamed = admin.post("/admin/accounts", json={"accountId": "kitchen", "name": "Pantry"})
    event = admin.get("/kitchen", params={"data": "now"})

    assert unknown.status_code == 404
    assert created.status_code == 201
    assert created.json() == {
        "account": {"accountId": "kitchen", "name": "Kitchen", "active": True},
        "changes": ["created"],
    }
    assert [again.status_code, unnamed.status_code] == [200, 200]
    assert again.json()["changes"] == unnamed.json()["changes"] == []
    assert renamed.status_code == 200
    assert renamed.json() == {
        "account": {"accountId": "kitchen", "name": "Pantry", "active": True},
        "changes": ["renamed"],
    }
    # This worker forgot its "unknown" answer at once, although its TTL is a minute.
    assert event.status_code == 200
    assert [topic for topic, _ in publisher.published] == ["track/kitchen"]


def test_an_account_without_a_name_is_named_after_its_id(admin: TestClient) -> None:
    created = admin.post("/admin/accounts", json={"accountId": "pantry"})

    assert created.json()["account"] == {"accountId": "pantry", "name": "pantry", "active": True}


def test_patch_deactivates_at_once_on_this_worker_and_changes_only_what_differs(
    admin: TestClient, database: tuple[str, Engine]
) -> None:
    before = admin.get("/1", params={"data": "x"})  # cached as active for a minute
    off = admin.patch("/admin/accounts/1", json={"active": False})
    refused = admin.get("/1", params={"data": "x"})
    again = admin.patch("/admin/accounts/1", json={"active": False})
    both = admin.patch("/admin/accounts/1", json={"name": "One", "active": True})
    nothing = admin.patch("/admin/accounts/1", json={})

    assert before.status_code == 200
    assert off.json() == {
        "account": {"accountId": "1", "name": "Active 1", "active": False},
        "changes": ["deactivated"],
    }
    assert refused.status_code == 403 and refused.json() == {"detail": "Inactive account!"}
    assert again.status_code == 200 and again.json()["changes"] == []
    assert both.json()["changes"] == ["renamed", "activated"]
    assert nothing.json() == {
        "account": {"accountId": "1", "name": "One", "active": True},
        "changes": [],
    }
    assert account_store.get(database[1], "1") == account_store.AccountRow("1", "One", True)


def test_show_counts_the_accounts_archived_events(
    admin: TestClient, database: tuple[str, Engine]
) -> None:
    archive.insert(database[1], [event_row("2", n) for n in range(3)])

    assert admin.get("/admin/accounts/2").json() == {
        "accountId": "2",
        "name": "Active 2",
        "active": True,
        "archivedEvents": 3,
    }
    assert admin.get("/admin/accounts/10").json()["archivedEvents"] == 0


def event_row(account_id: str, n: int) -> archive.Row:
    envelope = {
        "eventId": f"e-{n}",
        "accountId": account_id,
        "timestamp": "2026-11-28T12:00:00.000Z",
        "data": str(n),
    }
    return archive.parse(f"track/{account_id}", orjson.dumps(envelope))


def test_removing_an_account_with_archived_events_is_409_unless_forced_which_deletes_them(
    admin: TestClient, database: tuple[str, Engine]
) -> None:
    engine = database[1]
    archive.insert(engine, [event_row("2", n) for n in range(5)] + [event_row("1", 0)])
    before = admin.get("/2", params={"data": "x"})

    refused = admin.delete("/admin/accounts/2")
    kept = account_store.get(engine, "2")
    forced = admin.delete("/admin/accounts/2", params={"force": "true"})
    after = admin.get("/2", params={"data": "x"})

    assert before.status_code == 200
    assert refused.status_code == 409
    assert refused.json() == {
        "detail": "Account '2' has 5 archived event(s): deactivate it to keep them, or remove "
        "it with force=true to delete them too"
    }
    assert kept is not None
    assert forced.json() == {
        "account": {"accountId": "2", "name": "Active 2", "active": True},
        "changes": ["removed"],
        "deletedEvents": 5,
    }
    assert after.status_code == 404  # at once on this worker
    assert account_store.get(engine, "2") is None
    assert account_store.count_events(engine, "2") == 0
    assert account_store.count_events(engine, "1") == 1  # another account's history stays


def test_an_account_without_history_is_removed_without_force(
    admin: TestClient, database: tuple[str, Engine]
) -> None:
    removed = admin.delete("/admin/accounts/dormant")

    assert removed.status_code == 200 and removed.json()["deletedEvents"] == 0
    assert account_store.get(database[1], "dormant") is None


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/admin/accounts/nobody", None),
        ("PATCH", "/admin/accounts/nobody", {"active": False}),
        ("PATCH", "/admin/accounts/nobody", {}),
        ("DELETE", "/admin/accounts/nobody", None),
    ],
)
def test_unknown_accounts_are_404_and_nothing_is_created(
    admin: TestClient, database: tuple[str, Engine], method: str, path: str, body: object
) -> None:
    response = call(admin, method, path, body)

    assert response.status_code == 404
    assert response.json() == {"detail": "Account Id does not exist!"}
    assert account_store.get(database[1], "nobody") is None


@pytest.mark.parametrize(
    ("method", "path", "body", "detail"),
    [
        ("GET", "/admin/accounts/admin", None, INVALID_ID),
        ("GET", "/admin/accounts/a%2Fb", None, INVALID_ID),  # /admin/… of the event routes
        ("DELETE", "/admin/accounts/bad%20id", None, INVALID_ID),
        ("PATCH", "/admin/accounts/-1", {"active": True}, INVALID_ID),
        ("POST", "/admin/accounts", {"accountId": "reader"}, "Invalid account id: 'reader' is"),
        ("POST", "/admin/accounts", {"accountId": "x", "name": ""}, INVALID_NAME),
        ("POST", "/admin/accounts", {"accountId": "x", "name": " x"}, INVALID_NAME),
        ("POST", "/admin/accounts", {"accountId": "x", "name": "a\x1b[2Jb"}, INVALID_NAME),
        ("POST", "/admin/accounts", {"accountId": "x", "name": "n" * 201}, INVALID_NAME),
        ("PATCH", "/admin/accounts/1", {"name": "x\u202e"}, INVALID_NAME),
        ("POST", "/admin/accounts", {"account_id": "x"}, None),  # camelCase only
        ("POST", "/admin/accounts", {"accountId": "x", "owner": "me"}, None),
        ("PATCH", "/admin/accounts/1", {"active": "perhaps"}, None),
        ("GET", "/admin/accounts?limit=10001", None, None),
    ],
)
def test_invalid_ids_names_and_bodies_are_422_and_change_nothing(
    admin: TestClient,
    database: tuple[str, Engine],
    method: str,
    path: str,
    body: object,
    detail: str | None,
) -> None:
    response = call(admin, method, path, body)

    assert response.status_code == 422
    if detail is not None:
        assert response.json()["detail"].startswith(detail)
    assert account_store.get(database[1], "x") is None
    assert account_store.get(database[1], "1") == account_store.AccountRow("1", "Active 1", True)


def test_an_unreachable_database_is_503_with_retry_after(
    tmp_path: Path, written_password_file: Path
) -> None:
    url, _repair = database_to_repair(tmp_path)
    settings = load_settings(database_url=url, password_file=written_password_file)
    with TestClient(create_app(settings, FakePublisher())) as client:
        listed = client.get("/admin/accounts", auth=TRACKER)
        added = client.post("/admin/accounts", json={"accountId": "k"}, auth=TRACKER)

    for response in (listed, added):
        assert response.status_code == 503
        assert response.json() == {"detail": "Account database unavailable; retry later"}
        assert response.headers["retry-after"] == "1"


def test_admin_is_a_fixed_endpoint_not_an_account(admin: TestClient) -> None:
    assert "admin" in admin.app.reserved  # type: ignore[attr-defined]
    refused = admin.get("/admin", params={"data": "x"})
    assert refused.status_code == 422 and refused.json()["detail"].startswith(INVALID_ID)
