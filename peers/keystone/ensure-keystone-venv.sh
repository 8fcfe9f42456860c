#!/usr/bin/env bash
# Keystone from PyPI in a venv of its own (a service of its own, with its own
# pins, as deployments run it), cached in .cache/keystone-venv-<version> so that
# only the first run pays for the install. Reinstalled when the version or
# the package list below changes. Prints the venv's path.
#
#   peers/keystone/ensure-keystone-venv.sh [PYTHON] [KEYSTONE_VERSION]
set -eu
python=${1:-python3}
version=${2:-${ZAQAR_OTEL_KEYSTONE_VERSION:-30.0.0}}
cd "$(dirname "$0")/../.."
venv=.cache/keystone-venv-$version
# osprofiler's otlp driver imports the OTel SDK and the OTLP/HTTP exporter;
# gunicorn serves keystone.wsgi.api:application.
packages="keystone==$version osprofiler opentelemetry-sdk opentelemetry-exporter-otlp-proto-http gunicorn"
stamp=$venv/.installed
if [ "$(cat "$stamp" 2>/dev/null)" != "$packages" ]; then
    echo "installing Keystone $version into $venv (once)" >&2
    rm -rf "$venv"
    mkdir -p .cache
    "$python" -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check --upgrade pip >&2
    # shellcheck disable=SC2086 # one word per package
    "$venv/bin/pip" install --quiet --disable-pip-version-check $packages >&2
    "$venv/bin/pip" check >&2
    echo "$packages" > "$stamp"
fi
echo "$venv"
