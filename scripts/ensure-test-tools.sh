#!/bin/sh
# Tools the test suite and the benchmark drive as real peers, beyond Mosquitto:
# docker-compose (validates docker-compose.yml; no engine needed), openssl (throwaway CA),
# wrk and hey (HTTP load). Installed through apt when possible; otherwise the tests that
# need them skip with a reason.
set -eu

missing=""
for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
[ -z "$missing" ] && exit 0

if command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else SUDO="none"; fi
    if [ "$SUDO" != none ]; then
        echo "installing:$missing" >&2
        $SUDO apt-get update -qq
        # The Debian package of docker-compose is named like the command.
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
        exit 0
    fi
fi
echo "warning:$missing not installed; the checks that need them will be skipped" >&2
