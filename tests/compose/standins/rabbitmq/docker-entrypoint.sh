#!/bin/sh
# As root: write the cookie, hand the node's directories to rabbitmq, run again as it.
set -eu
if [ "$(id -u)" = 0 ]; then
    mkdir -p /var/lib/rabbitmq /var/log/rabbitmq
    if [ -n "${RABBITMQ_ERLANG_COOKIE:-}" ]; then
        cookie=/var/lib/rabbitmq/.erlang.cookie
        rm -f "$cookie"
        printf '%s' "$RABBITMQ_ERLANG_COOKIE" > "$cookie"
        chmod 0400 "$cookie"
    fi
    chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /var/log/rabbitmq
    exec setpriv --reuid rabbitmq --regid rabbitmq --init-groups "$0" "$@"
fi
exec "$@"
