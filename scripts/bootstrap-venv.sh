#!/bin/sh
# Create or repair a virtualenv and install into it: bootstrap-venv.sh VENV PIP_INSTALL_ARGS...
#
# An interrupted bootstrap (Ctrl-C while `python -m venv` or pip runs) leaves a directory
# that looks like a venv but has no pip, or half the packages. So a venv counts as usable
# only when its pip runs, and as complete only when the stamp exists: it is removed before
# installing and written last, so any interruption makes the next run install again.
set -eu

venv=$1
shift
python=${PYTHON:-python3}
stamp=$venv/.installed

if ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    if [ -e "$venv" ]; then
        echo "$venv is incomplete (an interrupted bootstrap?): creating it again" >&2
        rm -rf "$venv"
    fi
    "$python" -m venv "$venv"
fi
rm -f "$stamp"
"$venv/bin/python" -m pip install --quiet "$@"
touch "$stamp"
