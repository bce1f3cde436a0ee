import pytest

from subscriber.dedup import Deduplicator


def test_second_sighting_is_a_duplicate() -> None:
    dedup = Deduplicator(10)
    assert dedup.seen("a") is False
    assert dedup.seen("a") is True
    assert "a" in dedup and len(dedup) == 1


def test_memory_is_bounded_and_the_oldest_are_forgotten_first() -> None:
    dedup = Deduplicator(3)
    for key in "abcd":
        dedup.seen(key)
    assert len(dedup) == 3
    assert "a" not in dedup
    assert dedup.seen("d") is True
    assert dedup.seen("a") is False


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Deduplicator(0)
