#!/usr/bin/env bash
# The test areas that have pure-Python fallbacks, run against a copy of the package without its compiled
# extensions: what an install without a C compiler runs. Tests of the compiled parts skip themselves there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
pure=$(mktemp -d)
trap 'rm -rf "$pure"' EXIT
cp -r src/otel_audit "$pure/"
find "$pure" \( -name '*.so' -o -name '__pycache__' \) -prune -exec rm -rf {} +
export PYTHONPATH="$pure${PYTHONPATH:+:$PYTHONPATH}"
# The copy, not the installed package, must be what the tests import.
"$PY" -c "
import otel_audit, otel_audit.delivery.spool as spool
assert otel_audit.__file__.startswith('$pure'), otel_audit.__file__
assert spool.SpoolStage is None, 'compiled extensions in the pure-Python copy'
"
echo "test-pure-python: $pure (no compiled extensions)"
"$PY" -m pytest -p no:cacheprovider tests/core tests/delivery tests/processors tests/instrumentation tests/store "$@"
