#!/bin/sh
# Create or repair a virtualenv and install into it: bootstrap-venv.sh VENV PIP_INSTALL_ARGS...
#
# An interrupted bootstrap (Ctrl-C while `python -m venv` or pip runs) leaves a directory
# that looks like a venv but has no pip, or half the packages. So a venv counts as usable
# only when its pip runs, and as complete only when the stamp exists: it is removed before
# installing and written last, so any interruption makes the next run install again.
#
# A first install takes half a minute or more: each phase says what it does, and pip's own
# lines (one per package it collects) show that it moves.
set -eu

venv=$1
shift
python=${PYTHON:-python3}
stamp=$venv/.installed
started=$(date +%s)

say() {
    echo "[bootstrap] $*"
}

if ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    if [ -e "$venv" ]; then
        echo "$venv is incomplete (an interrupted bootstrap?): creating it again" >&2
        rm -rf "$venv"
    fi
    say "creating the virtualenv $venv with $("$python" --version 2>&1)"
    "$python" -m venv "$venv"
fi
rm -f "$stamp"
say "installing into $venv: pip install $* (the first time takes a minute or so)"
"$venv/bin/python" -m pip install --disable-pip-version-check --progress-bar off "$@"
touch "$stamp"
say "$venv is ready ($(($(date +%s) - started)) s)"
