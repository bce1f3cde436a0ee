#!/bin/sh
# As the upstream image's: hand /mosquitto to the broker's user, then run the command.
set -e
if [ "$(id -u)" = 0 ]; then
    chown -R mosquitto:mosquitto /mosquitto 2>/dev/null || true
fi
exec "$@"
