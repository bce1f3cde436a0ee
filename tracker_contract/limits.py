"""Sizes the broker, the tracker and the devices agree on.

The broker refuses anything larger than the largest legal message (``mqtt/conf.d``), and
the tracker's own MQTT client never buffers a bigger packet: both derive from the largest
``data`` an event may carry (``TRACKER_MAX_DATA_BYTES``).
"""

from __future__ import annotations

# JSON turns a control character into \u00XX: six bytes for one of data.
JSON_ESCAPE_FACTOR = 6
# Every field but data, keys and quoting included: an eventId (<= 128 characters), an
# accountId (<= 64), a timestamp, and the optional deviceTime (<= 35), traceId (32) and
# requestId (<= 128 visible characters, 256 once `"` and `\` are escaped): about 650.
FIELDS_BYTES = 1024
# Fixed header (<= 5), topic (<= "tracker/status/" + a 64-character client id), packet id.
PACKET_OVERHEAD_BYTES = 128


def largest_message(max_data_bytes: int) -> int:
    """The largest payload of a legal device message or event envelope."""
    return max_data_bytes * JSON_ESCAPE_FACTOR + FIELDS_BYTES


def largest_packet(max_data_bytes: int) -> int:
    """The largest MQTT packet carrying a legal message."""
    return largest_message(max_data_bytes) + PACKET_OVERHEAD_BYTES
