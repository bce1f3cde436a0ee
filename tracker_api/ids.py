"""The syntax of account ids: the one definition the API, ingest, the seed, broker logins
and ``mqtt-tail --account`` share. Kept free of heavy imports so the CLI can use it.

An account id is a topic level (``track/<accountId>``), so it can never contain ``/``,
``+`` or ``#`` and can never inject topic levels or wildcards.
"""

from __future__ import annotations

import re

ACCOUNT_ID_RULE = "[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
ACCOUNT_ID_PATTERN = f"^{ACCOUNT_ID_RULE}$"
"""As OpenAPI and JSON Schema write it."""
# \Z, not $: `$` also matches before a trailing newline, and `\Z` makes `.match` as strict
# as `.fullmatch`, whichever a caller uses.
ACCOUNT_ID = re.compile(rf"(?:{ACCOUNT_ID_RULE})\Z")
ACCOUNT_ID_HELP = "1-64 characters from A-Z a-z 0-9 _ . -, starting with a letter or digit"
