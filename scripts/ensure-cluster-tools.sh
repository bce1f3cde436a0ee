#!/bin/sh
# The replicated broker cluster's tools: rabbitmq-server (Debian's 3.10, with its MQTT
# plugin) and haproxy (the load balancer of `make cluster`). Installed through apt as root
# or with sudo; otherwise say how, and the cluster tests skip with a reason.
#
# The Debian package starts its own system-wide node at install time. The project runs
# its nodes itself (own names, ports and data dirs), and an idle node burns a good part of
# a core, so that start is vetoed with a temporary policy-rc.d, and whatever the install
# started anyway (a system whose init ignores policy-rc.d) is stopped right after.
set -eu

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

missing=""
have rabbitmq-server || missing="$missing rabbitmq-server"
have haproxy || missing="$missing haproxy"
[ -z "$missing" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "warning:$missing not installed (no apt-get here): install them with your package" \
         "manager for \`make cluster\`; the cluster tests will be skipped" >&2
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "warning:$missing not installed: run as root, or with sudo:" \
         "apt-get install$missing; the cluster tests will be skipped" >&2
    exit 0
fi

# Processes of the package's own node that exist before the install are not ours to stop.
node_pids() { pgrep -u rabbitmq 2>/dev/null | sort || true; }
before=$(node_pids)

policy=/usr/sbin/policy-rc.d
our_policy=""
if [ ! -e "$policy" ]; then
    our_policy=$policy
    printf '#!/bin/sh\n# written by mqtt-tracker scripts/ensure-cluster-tools.sh\nexit 101\n' \
        | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 0755 "$policy"
fi
cleanup() { [ -z "$our_policy" ] || $SUDO rm -f "$our_policy"; }
# Interrupted: clean up and stop there (130, 143 as the shell reports a death by the
# signal); the EXIT trap cleans up on every other way out, and runs again harmlessly.
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

echo "installing:$missing" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null

if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    for unit in rabbitmq-server haproxy; do
        $SUDO systemctl disable --now "$unit" >/dev/null 2>&1 || true
    done
fi
started=$(node_pids | comm -13 /dev/fd/3 - 3<<EOF
$before
EOF
)
if [ -n "$started" ]; then
    echo "stopping the node the package started (pids: $(echo $started))" >&2
    # shellcheck disable=SC2086
    $SUDO kill $started 2>/dev/null || true
fi
