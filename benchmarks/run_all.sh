#!/bin/sh
# Runs every benchmark of migration-guard and prints its numbers (benchmarks/README.md has the
# latest results and the goals). Every measurement alternates with its anchor within one run (a
# bare endpoint, a bare interpreter, a same-size body), so a loaded machine moves both alike: read
# the ratios. Takes about ten minutes on 2 cores. Set MATRIX_VMS / MEMORY_VMS / EVACUATION_VMS to
# try smaller sizes.
#
#   sh benchmarks/run_all.sh            # from the repository root
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export PYTHONWARNINGS=ignore
echo "== machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(uname -sr), $($PY --version 2>&1), $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "== engine";            $PY benchmarks/engine.py
echo "== service";           $PY benchmarks/service.py
echo "== hook";              $PY benchmarks/hook.py
echo "== evacuation";        $PY benchmarks/evacuation.py --vms "${EVACUATION_VMS:-1000}"
echo "== evacuation, first request of a service without the refresher"; $PY benchmarks/evacuation.py --vms "${EVACUATION_VMS:-1000}" --cold
echo "== memory";            $PY benchmarks/memory.py --vms "${MEMORY_VMS:-10000}"
echo "== matrix endpoint";   $PY benchmarks/matrix.py --vms "${MATRIX_VMS:-10000}"
echo "== dashboard";         $PY benchmarks/dashboard.py
echo "== matrix endpoint, 256 Proxmox threads"; $PY benchmarks/matrix.py --vms "${MATRIX_VMS:-10000}" --rounds 1 --proxmox-workers 256
echo "== machine after: load average $(cut -d' ' -f1-3 /proc/loadavg)"
