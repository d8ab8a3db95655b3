#!/usr/bin/env bash
# Creates .synapse-venv (separate from the project's .venv) with matrix-synapse from PyPI, at the
# pinned version below. Used by the differential tests (tests/core/stateres/test_against_synapse.py,
# tests/core/auth/test_against_synapse.py), by bench/bench_stateres.py and by .ci/run.
# Idempotent: does nothing when the environment already has the pinned version.
# SYNAPSE_VERSION overrides the pin (e.g. to try a newer release); SYNAPSE_PYTHON the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.synapse-venv
VERSION=${SYNAPSE_VERSION:-1.163.2}
PY=${SYNAPSE_PYTHON:-python3}
# The installed distribution's version (synapse.__version__ appends git details of the cwd).
# The modules the comparison scripts (bench/synapse_*.py) import.
CHECK="import importlib.metadata as m, synapse.events, synapse.event_auth, synapse.state.v2
import synapse.storage.databases.main.event_federation
print(m.version('matrix-synapse'))"
if [ -x "$VENV/bin/python" ] && [ "$("$VENV/bin/python" -c "$CHECK" 2>/dev/null)" = "$VERSION" ]; then
    exit 0
fi
rm -rf "$VENV"
"$PY" -m venv "$VENV"
# --no-compile: byte-compiling all of Synapse is ~40% of the install's CPU time. Only the modules
# the comparisons import are compiled, by the import below (which writes their bytecode even
# where PYTHONDONTWRITEBYTECODE is set).
"$VENV/bin/python" -m pip install --quiet --no-compile --disable-pip-version-check \
    "matrix-synapse==$VERSION"
installed=$(env -u PYTHONDONTWRITEBYTECODE "$VENV/bin/python" -c "$CHECK")
echo "synapse $installed in $VENV (set up in ${SECONDS}s)"
