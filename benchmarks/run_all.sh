#!/bin/sh
# Runs every benchmark of migration-guard and prints its numbers (benchmarks/README.md has the
# latest results and the goals). Takes a few minutes on 2 cores; the matrix at 10,000 VMs x 64
# nodes is the longest part. Set MATRIX_VMS / MEMORY_VMS to try smaller sizes.
#
#   sh benchmarks/run_all.sh            # from the repository root
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export PYTHONWARNINGS=ignore
echo "== machine: $(nproc) cores, $(uname -sr), $($PY --version 2>&1), $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "== engine";            $PY benchmarks/engine.py
echo "== service";           $PY benchmarks/service.py
echo "== hook";              $PY benchmarks/hook.py
echo "== evacuation";        $PY benchmarks/evacuation.py
echo "== evacuation, first request of a service without the refresher"; $PY benchmarks/evacuation.py --cold
echo "== memory";            $PY benchmarks/memory.py --vms "${MEMORY_VMS:-10000}"
echo "== matrix endpoint";   $PY benchmarks/matrix.py --vms "${MATRIX_VMS:-10000}"
echo "== dashboard";         $PY benchmarks/dashboard.py
