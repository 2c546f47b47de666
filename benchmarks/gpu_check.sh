#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): the accelerator tests, then the issue's goals with a
# verdict each (gpu_goals.py: TE-TNP against TNP at 1,000 context points, every model on the
# large-context case within 6 GiB, peak memory against the context size), then a training step
# of every neural-process model at its paper size in float32 and bf16, torch.compile off and
# on, with peak memory, written to one JSON file. Whole run: under 8 minutes.
#
#   bash benchmarks/gpu_check.sh [OUT.json] [gpu_check.py options...]
#
# OUT defaults to benchmarks/results/gpu_check.json. It uses the Python in hand ($PYTHON, else
# python3) when its torch sees a CUDA device; otherwise it makes .venv-gpu-check (torch from
# PyPI, CUDA build, plus pyyaml and pytest) and uses that, which needs the network. Without a
# CUDA GPU it says so in one line and exits 2.
set -u
cd "$(dirname "$0")/.." || exit 1
out=benchmarks/results/gpu_check.json
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then  # a first argument that is not an option
    out=$1
    shift
fi
start=$SECONDS

needs_gpu() { echo "gpu_check: needs a CUDA GPU and found none ($1); nothing was run" >&2; exit 2; }

if ! command -v nvidia-smi >/dev/null 2>&1 && [ ! -e /dev/nvidia0 ]; then
    needs_gpu "no nvidia-smi, no /dev/nvidia0"
fi
py=${PYTHON:-python3}
has_cuda() { "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
    >/dev/null 2>&1; }
if ! has_cuda "$py"; then
    venv=.venv-gpu-check
    if [ ! -x "$venv/bin/python" ]; then
        echo "gpu_check: $py has no CUDA torch; making $venv (pip install torch pyyaml pytest)" >&2
        python3 -m venv "$venv" && timeout 240 "$venv/bin/pip" install -q torch pyyaml pytest \
            || { echo "gpu_check: could not install torch into $venv" >&2; exit 1; }
    fi
    py=$venv/bin/python
    has_cuda "$py" || needs_gpu "torch in $venv sees no CUDA device"
fi
for mod in yaml pytest; do  # the experiment files and the tests; a missing one is reported
    "$py" -c "import $mod" 2>/dev/null || echo "gpu_check: $py lacks $mod" >&2
done
left=$(( 470 - (SECONDS - start) ))
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec timeout "$left" "$py" benchmarks/gpu_check.py --out "$out" --budget-s $(( left - 20 )) "$@"
