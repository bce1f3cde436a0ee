import pytest

from subscriber.dedup import Deduplicator


def test_second_sighting_is_a_duplicate() -> None:
    dedup = Deduplicator(10)
    assert dedup.seen("1", "a") is False
    assert dedup.seen("1", "a") is True
    assert ("1", "a") in dedup and len(dedup) == 1


def test_the_same_event_id_in_two_accounts_is_two_events() -> None:
    dedup = Deduplicator(10)
    assert dedup.seen("2", "order-1") is False
    assert dedup.seen("3", "order-1") is False
    assert dedup.seen("3", "order-1") is True
    assert len(dedup) == 2


def test_memory_is_bounded_and_the_oldest_are_forgotten_first() -> None:
    dedup = Deduplicator(3)
    for key in "abcd":
        dedup.seen("1", key)
    assert len(dedup) == 3
    assert ("1", "a") not in dedup
    assert dedup.seen("1", "d") is True
    assert dedup.seen("1", "a") is False


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Deduplicator(0)
