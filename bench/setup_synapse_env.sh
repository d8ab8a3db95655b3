#!/usr/bin/env bash
# Creates .bench-venv (separate from the project's .venv) with matrix-synapse from PyPI, used by
# bench/bench_stateres.py to compare our state resolution with Synapse's on the same inputs.
# Idempotent: does nothing when the environment already imports synapse.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.bench-venv
PY=${BENCH_PYTHON:-python3}
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import synapse.events, synapse.event_auth, synapse.state.v2" 2>/dev/null; then
    exit 0
fi
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet "matrix-synapse${SYNAPSE_VERSION_SPEC:->=1.135}"
"$VENV/bin/python" -c "import synapse, synapse.events, synapse.event_auth, synapse.state.v2; print('synapse', synapse.__version__)"
