#!/bin/sh
# Make sure the Mosquitto broker (and its command-line clients, used by the tests)
# are installed: apt-get as root, sudo apt-get, or brew. Otherwise say how.
set -eu

have() { command -v "$1" >/dev/null 2>&1; }

# Debian installs the broker in /usr/sbin, which a non-root PATH may lack.
if { have mosquitto || [ -x /usr/sbin/mosquitto ]; } && have mosquitto_sub; then
    exit 0
fi

echo "mosquitto not found: installing it" >&2
if have apt-get; then
    if [ "$(id -u)" = 0 ]; then
        SUDO=""
    elif have sudo; then
        SUDO="sudo"
    else
        SUDO="none"
    fi
    if [ "$SUDO" != none ]; then
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mosquitto mosquitto-clients >/dev/null
        # The Debian package enables a system-wide broker on :1883; ours runs from the project.
        if have systemctl && systemctl is-active --quiet mosquitto 2>/dev/null; then
            $SUDO systemctl disable --now mosquitto >/dev/null 2>&1 || true
        fi
        exit 0
    fi
elif have brew; then
    brew install mosquitto
    exit 0
fi

echo "error: Mosquitto is required. Install it with your package manager" \
     "(apt-get install mosquitto mosquitto-clients / brew install mosquitto)," \
     "or run the whole stack with 'docker compose up'." >&2
exit 1
