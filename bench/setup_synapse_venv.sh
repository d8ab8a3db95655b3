#!/usr/bin/env bash
# Creates .synapse-venv (separate from the project's .venv) with matrix-synapse from PyPI, at the
# pinned version below. Used by the differential tests (tests/stateres/test_against_synapse.py,
# tests/core/test_auth_against_synapse.py), by bench/bench_stateres.py and by .ci/run.
# Idempotent: does nothing when the environment already has the pinned version.
# SYNAPSE_VERSION overrides the pin (e.g. to try a newer release); SYNAPSE_PYTHON the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.synapse-venv
VERSION=${SYNAPSE_VERSION:-1.163.2}
PY=${SYNAPSE_PYTHON:-python3}
CHECK="import synapse, synapse.events, synapse.event_auth, synapse.state.v2; print(synapse.__version__)"
if [ -x "$VENV/bin/python" ] && [ "$("$VENV/bin/python" -c "$CHECK" 2>/dev/null)" = "$VERSION" ]; then
    exit 0
fi
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "matrix-synapse==$VERSION"
echo "synapse $("$VENV/bin/python" -c "$CHECK") in $VENV"
