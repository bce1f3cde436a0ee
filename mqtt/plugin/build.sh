#!/bin/sh
# Build the session_owner broker plugin into a folder: build.sh OUT_DIR -> OUT_DIR/session_owner.so
# Needs a C compiler and Mosquitto's plugin headers (Debian: gcc, mosquitto-dev,
# libmosquitto-dev; scripts/ensure-mosquitto.sh installs them). Rebuilds only when the
# source is newer than the library, and replaces the library atomically, so a broker
# that is starting never loads half a file.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUT_DIR}
mkdir -p "$out"
target="$out/session_owner.so"
if [ -f "$target" ] && [ "$target" -nt "$here/session_owner.c" ]; then
    echo "$target"
    exit 0
fi
tmp="$target.$$"
trap 'rm -f "$tmp"' EXIT
${CC:-cc} -std=c99 -O2 -Wall -Wextra -Werror -fPIC -shared -o "$tmp" "$here/session_owner.c"
chmod 0644 "$tmp"
mv -f "$tmp" "$target"
echo "$target"
