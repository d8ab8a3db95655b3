#!/usr/bin/env bash
# The state resolution benchmark in one command: sets up .synapse-venv (matrix-synapse from
# PyPI) if needed, then runs bench/bench_stateres.py (extra arguments are passed on).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! bash bench/setup_synapse_venv.sh; then
    echo "Synapse environment could not be set up; running without the comparison" >&2
    exec .venv/bin/python bench/bench_stateres.py --no-synapse "$@"
fi
exec .venv/bin/python bench/bench_stateres.py "$@"
