"""Who may send, how fast, from which origin, and under which request id: logins from a
real password file written by `tracker-api users`, rate limits, CORS and tracing, on both
HTTP paths."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from devkit.metrics import value as metric
from devkit.waiting import wait_until
from tests.helpers.fakes import FakePublisher
from tracker_api.app import create_app
from tracker_api.config import ConfigError, load_settings
from tracker_api.errors import (
    BatchOverBurst,
    LoginForbidden,
    LoginNeedsJson,
    LoginNeedsPost,
    LoginRefused,
    LoginRequired,
    LoginThrottled,
    MalformedLogin,
    RateLimited,
)
from tracker_api.http import auth as auth_module
from tracker_api.http.auth import HttpAuth, basic_header
from tracker_api.http.batch import NDJSON
from tracker_api.http.runtime import runtime_of
from tracker_api.http.throttle import FailureBuckets, LoginThrottle
from tracker_api.http.tracing import trace_id
from tracker_api.service.rate_limit import RateLimiter

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


def users(*args: str) -> None:
    """`tracker-api users …` as a real process, as an operator would run it."""
    subprocess.run(
        [sys.executable, "-m", "tracker_api", "users", *args], check=True, capture_output=True
    )


@pytest.fixture(scope="module")
def written_password_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "passwd"
    users("add", "1", "--password", "one-secret", "--password-file", str(path))
    users("add", "2", "--password", "two-secret", "--password-file", str(path))
    users("add", "--role", "tracker", "--password", "svc-secret", "--password-file", str(path))
    return path


@pytest.fixture
def password_file(written_password_file: Path, tmp_path: Path) -> Path:
    """A copy for each test, which may change it."""
    path = tmp_path / "passwd"
    shutil.copy(written_password_file, path)
    return path


def make_client(
    database: tuple[str, Engine], publisher: FakePublisher, fast_path: bool, **settings: object
) -> TestClient:
    loaded = load_settings(database_url=database[0], fast_path=fast_path, **settings)
    return TestClient(create_app(loaded, publisher=publisher, engine=database[1]))


@pytest.fixture(params=[True, False], ids=["fast-path", "fastapi-routes"])
def fast_path(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def auth_client(
    database: tuple[str, Engine], publisher: FakePublisher, password_file: Path, fast_path: bool
) -> Iterator[TestClient]:
    with make_client(
        database,
        publisher,
        fast_path,
        http_auth=True,
        password_file=password_file,
        http_auth_cache_ttl=0.2,
    ) as client:
        yield client


def test_the_accounts_own_login_and_the_service_login_may_send(
    auth_client: TestClient, publisher: FakePublisher
) -> None:
    own = auth_client.post("/1", json={"data": "a"}, auth=("1", "one-secret"))
    service = auth_client.post("/1", json=[{"data": "b"}], auth=("tracker", "svc-secret"))

    assert (own.status_code, service.status_code) == (200, 200)
    assert len(publisher.published) == 2


@pytest.mark.parametrize(
    ("auth", "detail"),
    [
        (None, LoginRequired.detail),
        (("1", "wrong"), LoginRefused.detail),
        (("nobody", "x"), LoginRefused.detail),
    ],
    ids=["none", "wrong-password", "no-such-user"],
)
def test_no_login_and_a_wrong_login_are_401_with_distinct_details_and_a_challenge(
    auth_client: TestClient,
    publisher: FakePublisher,
    auth: tuple[str, str] | None,
    detail: str,
) -> None:
    single = auth_client.post("/1", json={"data": "a"}, auth=auth)
    batch = auth_client.post("/1", json=[{"data": "a"}], auth=auth)

    for response in (single, batch):
        assert response.status_code == 401
        assert response.json() == {"detail": detail}
        assert response.headers["www-authenticate"].startswith('Basic realm="tracker"')
    assert LoginRequired.detail != LoginRefused.detail
    assert publisher.published == []


def test_a_malformed_authorization_header_is_401_saying_so(
    auth_client: TestClient, publisher: FakePublisher
) -> None:
    for value in ("Bearer abc", "Basic !!!", "Basic bm9jb2xvbg=="):  # the last: "nocolon"
        response = auth_client.post("/1", json={"data": "a"}, headers={"Authorization": value})
        assert response.status_code == 401
        assert response.json() == {"detail": MalformedLogin.detail}
    assert publisher.published == []


def test_another_accounts_login_is_403(auth_client: TestClient, publisher: FakePublisher) -> None:
    response = auth_client.post("/1", json={"data": "a"}, auth=("2", "two-secret"))

    assert response.status_code == 403
    assert response.json() == {"detail": LoginForbidden.detail}
    assert publisher.published == []


def test_a_removed_login_is_refused_once_the_cache_notices(
    auth_client: TestClient, password_file: Path
) -> None:
    assert auth_client.post("/1", json={"data": "a"}, auth=("1", "one-secret")).status_code == 200

    users("remove", "1", "--password-file", str(password_file))

    wait_until(
        lambda: (
            auth_client.post("/1", json={"data": "b"}, auth=("1", "one-secret")).status_code == 401
        ),
        timeout=5,
    )


def test_verified_logins_are_cached_so_repeated_requests_derive_no_key(
    password_file: Path,
) -> None:
    now = [0.0]
    auth = HttpAuth(password_file, ttl=5, clock=lambda: now[0])
    header = basic_header("1", "one-secret")

    for _ in range(100):
        auth.check("1", header)
    assert auth.derivations == 1
    now[0] = 6.0  # past the TTL: verified again
    auth.check("1", header)
    assert auth.derivations == 2


def test_wrong_logins_are_never_cached(password_file: Path) -> None:
    auth = HttpAuth(password_file, ttl=60)
    wrong = [basic_header("1", f"guess-{n}") for n in range(200)]
    wrong += [basic_header(f"user-{n}", "x") for n in range(200)]
    wrong += [f"Junk {n}" for n in range(200)]

    for header in wrong:
        with pytest.raises(LoginRequired):
            auth.login(header)
    assert auth.cached == 0
    assert auth.login(basic_header("1", "one-secret")) == "1"
    assert auth.cached == 1


def test_a_verified_login_leaves_the_cache_when_its_ttl_ends(password_file: Path) -> None:
    now = [0.0]
    auth = HttpAuth(password_file, ttl=5, clock=lambda: now[0])
    auth.login(basic_header("1", "one-secret"))
    auth.login(basic_header("2", "two-secret"))
    assert auth.cached == 2

    now[0] = 10.0  # both expired; any request sweeps them (at most once a second)
    with pytest.raises(LoginRequired):
        auth.login(None)
    auth.login(basic_header("tracker", "svc-secret"))

    assert auth.cached == 1


def test_only_the_usual_spelling_of_a_login_is_cached(password_file: Path) -> None:
    auth = HttpAuth(password_file, ttl=60)
    usual = basic_header("1", "one-secret")
    token = usual.removeprefix("Basic ")
    variants = ["basic " + token, "BASIC " + token, "Basic  " + token, f"Basic {token}  "]

    for variant in variants * 3:
        assert auth.login(variant) == "1"  # each verified, none stored
    assert auth.cached == 0
    assert auth.derivations == 12
    auth.login(usual)
    auth.login(usual)
    assert (auth.cached, auth.derivations) == (1, 13)


def test_first_logins_checked_on_several_threads_at_once_all_pass(
    password_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The history checks logins on threads: while one of them reads the password file,
    the others wait for it rather than look at the entries not yet read."""

    class SlowFile(auth_module.PasswordFile):
        def __init__(self, path: Path) -> None:
            time.sleep(0.2)  # widens the window in which the file is being read
            super().__init__(path)

    monkeypatch.setattr(auth_module, "PasswordFile", SlowFile)
    auth = HttpAuth(password_file, ttl=60)
    header = basic_header("1", "one-secret")
    start = threading.Barrier(8)
    results: list[str | BaseException] = []

    def login() -> None:
        start.wait()
        try:
            results.append(auth.login(header))
        except Exception as error:  # noqa: BLE001 - the outcome under test
            results.append(error)

    threads = [threading.Thread(target=login) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == ["1"] * 8


def test_guesses_checked_at_once_on_several_threads_pass_the_throttle_no_more_than_its_budget(
    password_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    verify = auth_module.verify_password

    def slow_verify(password: str, hashed: str) -> bool:
        time.sleep(0.1)  # widens the window in which the other threads check
        return verify(password, hashed)

    monkeypatch.setattr(auth_module, "verify_password", slow_verify)
    auth = HttpAuth(password_file, ttl=60, throttle=LoginThrottle(per_login=3, per_address=0))
    start = threading.Barrier(8)
    outcomes: list[str] = []

    def guess(n: int) -> None:
        start.wait()
        try:
            auth.login(basic_header("1", f"guess-{n}"))
        except LoginThrottled:
            outcomes.append("throttled")
        except LoginRequired:
            outcomes.append("refused")

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(outcomes) == ["refused"] * 3 + ["throttled"] * 5
    assert auth.derivations == 3


def test_a_right_password_gives_back_what_its_check_spent(password_file: Path) -> None:
    # No cache: every login is checked; a budget of one failure a minute.
    auth = HttpAuth(password_file, ttl=0, throttle=LoginThrottle(per_login=1, per_address=1))
    for _ in range(3):
        assert auth.login(basic_header("1", "one-secret"), "10.0.0.1") == "1"
    with pytest.raises(LoginRequired):
        auth.login(basic_header("1", "wrong"), "10.0.0.1")
    with pytest.raises(LoginThrottled):
        auth.login(basic_header("1", "one-secret"), "10.0.0.1")


def test_a_login_verified_while_the_file_changed_is_not_cached(
    password_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [0.0]
    auth = HttpAuth(password_file, ttl=60, clock=lambda: now[0])
    header = basic_header("1", "one-secret")
    verify = auth_module.verify_password
    removed = []

    def verify_while_removed(password: str, hashed: str) -> bool:
        if not removed:  # meanwhile, on another thread: the login goes, the file is read
            removed.append(users("remove", "1", "--password-file", str(password_file)))
            now[0] += 2 * auth_module.STAT_INTERVAL
            auth.login(basic_header("2", "two-secret"))
        return verify(password, hashed)

    monkeypatch.setattr(auth_module, "verify_password", verify_while_removed)
    assert auth.login(header) == "1"  # it was right when it was checked
    with pytest.raises(LoginRequired):
        auth.login(header)  # but not kept: the file read meanwhile no longer has it


def test_an_unknown_user_costs_the_same_key_derivation_as_a_known_one(
    password_file: Path,
) -> None:
    auth = HttpAuth(password_file, ttl=0)  # nothing cached: every check derives a key
    known = basic_header("1", "wrong")
    unknown = basic_header("nobody", "wrong")

    def seconds(header: str) -> float:
        started = time.perf_counter()
        with pytest.raises(LoginRefused):
            auth.login(header)
        return time.perf_counter() - started

    timings: dict[str, list[float]] = {"known": [], "unknown": []}
    for _ in range(200):  # interleaved, so that machine noise hits both alike
        timings["known"].append(seconds(known))
        timings["unknown"].append(seconds(unknown))

    assert auth.derivations == 400
    # Without a dummy derivation an unknown user took ~2 µs against ~80 µs for a known one.
    ratio = statistics.median(timings["unknown"]) / statistics.median(timings["known"])
    assert 0.5 < ratio < 2.0, timings


# -- failed logins are throttled -----------------------------------------------------------


def test_failed_logins_are_throttled_per_login_with_retry_after(
    auth_client: TestClient, publisher: FakePublisher
) -> None:
    wrong = [auth_client.post("/1", json={"data": "x"}, auth=("1", "guess")) for _ in range(10)]
    throttled = auth_client.post("/1", json={"data": "x"}, auth=("1", "guess"))
    right_but_throttled = auth_client.post("/1", json={"data": "x"}, auth=("1", "one-secret"))
    other_login = auth_client.post("/2", json={"data": "y"}, auth=("2", "two-secret"))

    assert [response.status_code for response in wrong] == [401] * 10
    for response in (throttled, right_but_throttled):  # the password is not even looked at
        assert response.status_code == 429
        assert response.headers["retry-after"] == "6"  # 10 a minute: one more in 6 s
        assert response.json() == {"detail": "Too many failed logins; retry after 6 s"}
    assert other_login.status_code == 200
    assert [orjson.loads(p)["data"] for _, p in publisher.published] == ["y"]


def test_failed_logins_are_throttled_per_client_address(
    database: tuple[str, Engine], publisher: FakePublisher, password_file: Path, fast_path: bool
) -> None:
    with make_client(
        database,
        publisher,
        fast_path,
        http_auth=True,
        password_file=password_file,
        login_failures_per_address=5,
    ) as client:
        # Each a different user: no login's own budget runs out, the address's does.
        wrong = [client.post("/1", json={"data": "x"}, auth=(f"u{n}", "x")) for n in range(5)]
        throttled = client.post("/1", json={"data": "x"}, auth=("1", "one-secret"))
        history = client.get("/events", params={"since": "1h"}, auth=("reader", "x"))
        counted = metric(
            client.get("/metrics").text,
            "tracker_requests_total",
            source="http",
            outcome="login_throttled",
        )

    assert [response.status_code for response in wrong] == [401] * 5
    assert throttled.status_code == 429
    assert throttled.headers["retry-after"] == "12"  # 5 a minute
    assert history.status_code == 429  # the history's logins share the budget
    assert counted >= 1
    assert publisher.published == []


def test_a_login_verified_before_the_throttle_keeps_working(
    auth_client: TestClient, publisher: FakePublisher
) -> None:
    assert auth_client.post("/1", json={"data": "a"}, auth=("1", "one-secret")).status_code == 200
    for _ in range(11):
        auth_client.post("/1", json={"data": "x"}, auth=("1", "guess"))

    # Its exact header verified within the cache's ttl: it proves the login, throttle or not.
    again = auth_client.post("/1", json={"data": "b"}, auth=("1", "one-secret"))

    assert again.status_code == 200


def test_the_failure_buckets_refill_over_a_minute_and_forget_the_oldest_beyond_their_size() -> None:
    buckets = FailureBuckets(per_minute=6, max_keys=2)  # one failure back every 10 s
    for _ in range(6):
        buckets.spend("a", now=0.0)
    assert buckets.wait("a", now=0.0) == pytest.approx(10.0)
    assert buckets.wait("a", now=5.0) == pytest.approx(5.0)
    assert buckets.wait("a", now=10.0) == 0.0
    buckets.spend("b", now=10.0)
    buckets.spend("c", now=10.0)  # a third key: "a", the least recently failed, goes
    assert len(buckets) == 2
    assert buckets.wait("a", now=10.0) == 0.0


def test_a_throttle_over_several_workers_gives_each_its_share() -> None:
    throttle = LoginThrottle(per_login=10, per_address=0, workers=2)
    for _ in range(5):
        throttle.failed("1", "198.51.100.7", now=0.0)
    with pytest.raises(LoginThrottled, match="retry after 12 s"):
        throttle.check("1", "198.51.100.7", now=0.0)
    throttle.check("2", "198.51.100.7", now=0.0)  # per address: off


# -- with logins on, only requests that need a CORS preflight carry events ----------------


def test_with_logins_on_events_need_a_post_with_a_json_or_ndjson_body(
    auth_client: TestClient, publisher: FakePublisher
) -> None:
    login = ("1", "one-secret")
    get = auth_client.get("/1", params={"data": "a"}, auth=login)
    path_form = auth_client.get("/1/a", auth=login)
    simple_posts = [
        auth_client.post("/1", content=b'{"data": "a"}', headers={"content-type": kind}, auth=login)
        for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data")
    ]
    untyped = auth_client.post("/1", content=b'{"data": "a"}', auth=login)
    json = auth_client.post(
        "/1",
        content=b'{"data": "b"}',
        headers={"content-type": "application/json; charset=utf-8"},
        auth=login,
    )
    ndjson = auth_client.post(
        "/1", content=b'{"data": "c"}\n', headers={"content-type": NDJSON}, auth=login
    )

    for response in (get, path_form):
        assert response.status_code == 405
        assert response.headers["allow"] == "POST"
        assert response.json() == {"detail": LoginNeedsPost.detail}
    for response in [*simple_posts, untyped]:
        assert response.status_code == 415
        assert response.json() == {"detail": LoginNeedsJson.detail}
    assert (json.status_code, ndjson.status_code) == (200, 200)
    assert [orjson.loads(p)["data"] for _, p in publisher.published] == ["b", "c"]


def test_a_refused_get_derives_no_key(auth_client: TestClient) -> None:
    http = runtime_of(auth_client.app.api).http  # type: ignore[attr-defined]
    for n in range(5):
        auth_client.get("/1", params={"data": "a"}, auth=("1", f"guess-{n}"))

    assert http.auth.derivations == 0


def test_with_logins_off_a_get_and_any_post_still_send(
    client: TestClient, publisher: FakePublisher
) -> None:
    get = client.get("/1", params={"data": "a"})
    text = client.post("/1", content=b'{"data": "b"}', headers={"content-type": "text/plain"})

    assert (get.status_code, text.status_code) == (200, 200)
    assert [orjson.loads(p)["data"] for _, p in publisher.published] == ["a", "b"]


def test_http_auth_needs_a_password_file_that_exists(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TRACKER_HTTP_AUTH=true needs TRACKER_PASSWORD_FILE"):
        load_settings(http_auth=True)
    with pytest.raises(ConfigError, match="TRACKER_PASSWORD_FILE: no such file"):
        load_settings(http_auth=True, password_file=tmp_path / "missing")


def test_over_the_rate_limit_is_429_with_retry_after_and_batches_count_each_event(
    database: tuple[str, Engine], publisher: FakePublisher, fast_path: bool
) -> None:
    with make_client(database, publisher, fast_path, rate_limit=3) as client:
        assert client.post("/1", json=[{"data": "a"}, {"data": "b"}]).status_code == 200
        assert client.get("/1?data=c").status_code == 200
        refused = client.get("/1?data=d")
        other_account = client.get("/2?data=e")

    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["detail"].startswith("Rate limit of 3 events/s for this account")
    assert other_account.status_code == 200
    assert [orjson.loads(p)["data"] for _, p in publisher.published] == ["a", "b", "c", "e"]


def test_refused_requests_spend_no_rate_limit_tokens(
    database: tuple[str, Engine], publisher: FakePublisher, fast_path: bool
) -> None:
    with make_client(database, publisher, fast_path, rate_limit=1) as client:
        refused = [
            client.get("/999?data=a"),  # unknown account
            client.get("/999?data=b"),
            client.get("/10?data=c"),  # inactive account
            client.get("/10?data=d"),
            client.get("/1"),  # no data
            client.get("/1?data=x&eventId=-bad"),
            client.post("/1", json={"data": "x"}, headers={"Idempotency-Key": "-bad"}),
        ]
        accepted = client.get("/1?data=e")  # the one token of account 1 is still there

    assert [response.status_code for response in refused] == [404, 404, 403, 403, 422, 422, 422]
    assert accepted.status_code == 200
    assert [orjson.loads(p)["data"] for _, p in publisher.published] == ["e"]


def test_the_token_bucket_refills_at_the_rate_and_a_batch_never_spends_more_than_the_burst() -> (
    None
):
    now = [0.0]
    limiter = RateLimiter(10, workers=2, clock=lambda: now[0])  # 5/s in this worker

    limiter.take("a", 5)
    with pytest.raises(RateLimited, match="retry after 1 s") as refused:
        limiter.take("a", 1)
    assert refused.value.headers == {"Retry-After": "1"}
    now[0] = 0.2  # one token back
    limiter.take("a", 1)
    now[0] = 2.0  # full again, yet a batch bigger than the burst never fits in it
    with pytest.raises(BatchOverBurst) as too_big:
        limiter.take("a", 12)
    assert too_big.value.status == 429 and too_big.value.headers == {}
    assert too_big.value.detail == (
        "A batch of 12 events exceeds the per-account burst (5 events); send at most 5 per request"
    )
    limiter.take("a", 5)  # the refused batch spent nothing: the bucket was still full
    now[0] = 2.5
    with pytest.raises(RateLimited, match="retry after 1 s"):  # (5 - 2.5) / 5 = 0.5
        limiter.take("a", 5)


def test_a_batch_larger_than_the_burst_is_429_and_the_account_is_not_locked_out(
    database: tuple[str, Engine], publisher: FakePublisher, fast_path: bool
) -> None:
    """TRACKER_RATE_LIMIT=5: a 1000-event batch is refused whole, without a Retry-After
    (no wait lets it pass), and the account's next second of events still passes."""
    with make_client(database, publisher, fast_path, rate_limit=5) as client:
        big = client.post("/1", json=[{"data": str(n)} for n in range(1000)])
        burst = client.post("/1", json=[{"data": str(n)} for n in range(5)])

    assert big.status_code == 429
    assert big.json() == {
        "detail": "A batch of 1000 events exceeds the per-account burst (5 events); "
        "send at most 5 per request"
    }
    assert "retry-after" not in big.headers
    assert burst.status_code == 200
    assert [orjson.loads(p)["data"] for _, p in publisher.published] == [str(n) for n in range(5)]


def test_request_ids_are_echoed_or_generated_and_carried_with_the_trace_id(
    client: TestClient, publisher: FakePublisher
) -> None:
    given = client.post(
        "/1",
        json=[{"data": "a"}, {"data": "b"}],
        headers={"X-Request-ID": "req-42", "traceparent": TRACEPARENT},
    )
    generated = [client.get("/1?data=c"), client.get("/1?data=d")]

    assert given.headers["x-request-id"] == "req-42"
    events = [orjson.loads(payload) for _, payload in publisher.published]
    assert [(e.get("requestId"), e.get("traceId")) for e in events] == [
        ("req-42", TRACE),
        ("req-42", TRACE),
        (None, None),
        (None, None),
    ]
    ids = {response.headers["x-request-id"] for response in generated}
    assert len(ids) == 2 and all(ids)


def test_an_invalid_request_id_is_422_and_not_echoed(
    client: TestClient, publisher: FakePublisher
) -> None:
    response = client.get("/1?data=a", headers={"X-Request-ID": "has space"})

    assert response.status_code == 422
    assert response.json()["detail"].startswith("Invalid X-Request-ID")
    assert response.headers["x-request-id"] != "has space"
    assert publisher.published == []


def test_every_refused_get_is_counted_like_a_refused_post(client: TestClient) -> None:
    def invalid() -> float:
        text = client.get("/metrics").text
        return metric(text, "tracker_requests_total", source="http", outcome="invalid")

    before = invalid()
    client.get("/1?data=a", headers={"X-Request-ID": "has space"})
    client.get("/1/%FF")  # path not UTF-8
    client.get("/1?data=%FF")  # query not UTF-8
    client.post("/1", json={"data": "a"}, headers={"X-Request-ID": "has space"})

    assert invalid() - before == 4


@pytest.mark.parametrize(
    "traceparent",
    [
        "00-" + "0" * 32 + "-00f067aa0ba902b7-01",
        f"00-{TRACE}-0000000000000000-01",
        f"ff-{TRACE}-00f067aa0ba902b7-01",
        f"00-{TRACE}-00f067aa0ba902b7-01-extra",
        f"00-{TRACE.upper()}-00f067aa0ba902b7-01",
        "garbage",
    ],
)
def test_an_invalid_traceparent_is_ignored(traceparent: str) -> None:
    assert trace_id(traceparent) is None


def test_a_failed_request_is_logged_with_its_request_id(
    client: TestClient, publisher: FakePublisher, caplog: pytest.LogCaptureFixture
) -> None:
    publisher.refuse = True
    with caplog.at_level("WARNING", logger="tracker_api.http.tracing"):
        client.get("/1?data=a", headers={"X-Request-ID": "req-failing"})
        client.post("/1", json=[{"data": "a"}], headers={"X-Request-ID": "req-batch"})

    lines = [record.getMessage() for record in caplog.records]
    assert any(line.startswith("request req-failing for account '1': 503") for line in lines)
    assert any(line.startswith("request req-batch for account '1': 503") for line in lines)


def test_cors_preflight_and_event_answers_carry_the_allowed_origin(
    database: tuple[str, Engine], publisher: FakePublisher, fast_path: bool
) -> None:
    origin = "https://dashboard.example"
    with make_client(database, publisher, fast_path, cors_origins=origin) as client:
        preflight = client.options(
            "/1",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )
        event = client.post("/1", json={"data": "a"}, headers={"Origin": origin})
        stranger = client.get("/1?data=b", headers={"Origin": "https://evil.example"})

    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == origin
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert event.headers["access-control-allow-origin"] == origin
    assert "x-request-id" in event.headers["access-control-expose-headers"].lower()
    assert "access-control-allow-origin" not in stranger.headers


def test_no_cors_headers_by_default(client: TestClient) -> None:
    response = client.get("/1?data=a", headers={"Origin": "https://dashboard.example"})

    assert "access-control-allow-origin" not in response.headers


def test_the_events_origins_open_neither_the_history_nor_the_operations(
    database: tuple[str, Engine], publisher: FakePublisher, fast_path: bool
) -> None:
    origin = "https://anywhere.example"
    with make_client(database, publisher, fast_path, cors_origins="*") as client:
        event = client.get("/1?data=a", headers={"Origin": origin})
        history = client.get("/events", params={"since": "1h"}, headers={"Origin": origin})
        preflight = client.options(
            "/events", headers={"Origin": origin, "Access-Control-Request-Method": "GET"}
        )
        operations = [client.get(path, headers={"Origin": origin}) for path in ("/metrics",)]

    assert event.headers["access-control-allow-origin"] == "*"
    assert history.status_code == 200  # open: no password file
    for response in (history, preflight, *operations):
        assert "access-control-allow-origin" not in response.headers


def test_history_origins_open_the_history_only(
    database: tuple[str, Engine], publisher: FakePublisher, fast_path: bool
) -> None:
    origin = "https://dashboard.example"
    with make_client(database, publisher, fast_path, history_cors_origins=origin) as client:
        preflight = client.options(
            "/events",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        history = client.get("/events", params={"since": "1h"}, headers={"Origin": origin})
        event = client.get("/1?data=a", headers={"Origin": origin})

    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == origin
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in preflight.headers
    assert history.headers["access-control-allow-origin"] == origin
    assert "access-control-allow-origin" not in event.headers


def test_any_origin_is_refused_for_the_history() -> None:
    with pytest.raises(ConfigError, match=r"TRACKER_HISTORY_CORS_ORIGINS: \* is refused"):
        load_settings(history_cors_origins="https://dashboard.example, *")


def test_the_openapi_document_declares_http_basic_where_logins_are_taken(
    database: tuple[str, Engine], publisher: FakePublisher, password_file: Path
) -> None:
    with make_client(
        database, publisher, True, http_auth=True, password_file=password_file
    ) as client:
        schema = client.get("/openapi.json").json()
    with make_client(database, publisher, True, password_file=password_file) as client:
        history_only = client.get("/openapi.json").json()
    with make_client(database, publisher, True) as client:
        open_schema = client.get("/openapi.json").json()

    basic = [{"httpBasic": []}]
    assert schema["components"]["securitySchemes"]["httpBasic"] == {
        "type": "http",
        "scheme": "basic",
        "description": "An MQTT login of TRACKER_PASSWORD_FILE",
    }
    assert schema["paths"]["/{account_id}"]["post"]["security"] == basic
    assert schema["paths"]["/events"]["get"]["security"] == basic
    assert "security" not in schema["paths"]["/{account_id}"]["get"]  # refused with logins
    assert "security" not in history_only["paths"]["/{account_id}"]["post"]
    assert history_only["paths"]["/events"]["get"]["security"] == basic
    # Without a password file no event or history route takes a login (the admin API
    # documents its own login, and is off there).
    assert "httpBasic" not in open_schema["components"].get("securitySchemes", {})
    assert "security" not in open_schema["paths"]["/events"]["get"]
    assert "security" not in open_schema["paths"]["/{account_id}"]["post"]
