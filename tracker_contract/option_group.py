"""Several click options (and arguments) as one decorator, to share them between commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def option_group(*options: Callable[[Any], Any]) -> Callable[[F], F]:
    """A decorator applying ``options`` as if stacked in this order on the command (the
    first is listed first in ``--help``)."""

    def apply(command: F) -> F:
        for option in reversed(options):
            command = option(command)
        return command

    return apply
