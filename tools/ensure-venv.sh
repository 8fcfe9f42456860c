#!/usr/bin/env bash
# Create the project's virtualenv. A fresh Debian/Ubuntu has python3 but not
# always its venv module (package python3-venv); install it when we may.
set -eu
python=${1:-python3}
venv=${2:-.venv}
[ -x "$venv/bin/python" ] && exit 0
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "zaqar-otel needs Python 3.10 or newer; $python is $("$python" -V 2>&1)" >&2
    exit 1
fi
if ! "$python" -m venv "$venv" 2>/dev/null; then
    rm -rf "$venv"
    ver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing python$ver-venv (the venv module is missing)" >&2
        apt-get update -qq && apt-get install -y -qq "python$ver-venv"
        "$python" -m venv "$venv"
    else
        echo "the venv module is missing: run 'sudo apt-get install python$ver-venv'" >&2
        exit 1
    fi
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
