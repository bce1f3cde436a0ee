#!/bin/sh
# Build the rabbitmq_session_owner plugin into a plugins folder:
#   build.sh OUT_DIR -> OUT_DIR/rabbitmq_session_owner-1.0.0/ebin/{*.app,*.beam}
# Add OUT_DIR to RABBITMQ_PLUGINS_DIR (or build straight into the broker's plugins folder)
# and enable rabbitmq_session_owner. Needs erlc, which Debian's erlang-base (a dependency
# of rabbitmq-server) and the rabbitmq images ship. Rebuilds only when the source is newer,
# and swaps the folder in whole, so a node that is starting never loads half a plugin.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUT_DIR}
name=rabbitmq_session_owner
target="$out/$name-1.0.0"
beam="$target/ebin/rabbit_auth_backend_session_owner.beam"
if [ -f "$beam" ] && [ "$beam" -nt "$here/rabbit_auth_backend_session_owner.erl" ]; then
    echo "$target"
    exit 0
fi
mkdir -p "$out"
tmp="$out/.$name.$$"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/ebin"
erlc -Werror -o "$tmp/ebin" "$here/rabbit_auth_backend_session_owner.erl"
cat > "$tmp/ebin/$name.app" <<APP
{application, $name,
 [{description, "A session belongs to its login: MQTT client ids <login> or <login>:..."},
  {vsn, "1.0.0"},
  {modules, [rabbit_auth_backend_session_owner]},
  {registered, []},
  {applications, [kernel, stdlib, rabbit_common, rabbit]},
  {env, []}]}.
APP
chmod -R a+rX "$tmp"
rm -rf "$target"
mv "$tmp" "$target"
echo "$target"
