#!/bin/sh
# Make sure the Mosquitto broker, its command-line clients (used by the tests) and what
# builds the project's broker plugin (a C compiler and Mosquitto's plugin headers, see
# mqtt/plugin/) are installed: apt-get as root, sudo apt-get, or brew. Otherwise say how.
# Touches nothing it did not install: a system broker that was already there is left
# as it was, running or not.
set -eu

have() { command -v "$1" >/dev/null 2>&1; }
have_header() { [ -f "/usr/include/$1" ] || [ -f "/usr/local/include/$1" ] || [ -f "/opt/homebrew/include/$1" ]; }

missing=""
have mosquitto || [ -x /usr/sbin/mosquitto ] || missing="$missing mosquitto"
have mosquitto_sub || missing="$missing mosquitto-clients"
have_header mosquitto_plugin.h || missing="$missing mosquitto-dev"
have_header mosquitto.h || missing="$missing libmosquitto-dev"
have cc || missing="$missing gcc libc6-dev"
[ -z "$missing" ] && exit 0

echo "installing:$missing" >&2
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
        # shellcheck disable=SC2086 # one word per package
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
        case "$missing" in
        *" mosquitto "* | *" mosquitto")
            # We installed the broker just now, and Debian enables it system-wide on :1883;
            # ours runs from the project. A broker that was there before is not ours to stop.
            if have systemctl && systemctl is-active --quiet mosquitto 2>/dev/null; then
                $SUDO systemctl disable --now mosquitto >/dev/null 2>&1 || true
            fi
            ;;
        esac
        exit 0
    fi
elif have brew; then
    brew install mosquitto
    exit 0
fi

echo "error: Mosquitto is required. Install it with your package manager" \
     "(apt-get install mosquitto mosquitto-clients mosquitto-dev libmosquitto-dev gcc /" \
     "brew install mosquitto), or run the whole stack with 'docker compose up'." >&2
exit 1
