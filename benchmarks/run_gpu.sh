#!/usr/bin/env bash
# The GPU run, in one command, from a fresh clone on a machine with torch (CUDA build) and triton:
#   1. install the package from this checkout (editable, with the [test] extra; offline: --no-deps and a
#      list of exactly which requirements are missing), and build the CUDA C++ library if it is not there;
#   2. run every GPU-marked test with compiled kernels (TRITON_INTERPRET=0);
#   3. run the benchmarks at full size, most valuable first: the sampler at SD1.5 512² (eager and compiled),
#      the scaling benchmark (SD1.5, up to 128 frames, as far as its time cap allows), the ops, the embedded model.
# Writes benchmarks/results/<gpu-name>-<date>.json and .md (both benchmarks append to the same file) and
# the logs of every step under benchmarks/results/<gpu-name>-<date>-logs/. Every step runs even when an
# earlier one failed; the exit status is non-zero when any step failed (the summary names them).
#
# Usage: benchmarks/run_gpu.sh            (PYTHON=/path/to/python to choose the interpreter;
#        ZS2_GIT_REVISION=<commit> when the tree was copied without a matching .git)
# Time boxes (a lent machine allows ~10 minutes a command): TIMEOUT_<step>=SECONDS caps that step, e.g.
#   TIMEOUT_gpu_tests=150 TIMEOUT_bench_ops_ema=180 benchmarks/run_gpu.sh
# ONLY="install gpu_tests ..." runs just the named steps (the others are listed as skipped).
# SCALING_TIME_CAP (default 300) is bench_scaling's own cap: it skips the points past it and keeps the rest.
# Results are written as they are measured, so a step cut short keeps what it finished.
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
export TRITON_INTERPRET=0 HF_HUB_OFFLINE=1
# Every step uses this checkout's code, even where the editable install could not be made.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

gpu=$("$PYTHON" -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")')
if [ -z "$gpu" ]; then
    echo "run_gpu.sh: torch sees no CUDA GPU (check the driver and that torch is a CUDA build)" >&2
    exit 2
fi
slug=$(printf '%s' "$gpu" | tr '[:upper:]' '[:lower:]' | sed -E 's/[^a-z0-9]+/-/g; s/^-+|-+$//g')
base="benchmarks/results/$slug-$(date -u +%Y-%m-%d)"
logs="$base-logs"
mkdir -p "$logs"
failed=()

# step NAME COMMAND...: run COMMAND (capped at $TIMEOUT_NAME seconds when set), tee its output to
# $logs/NAME.log, remember NAME if it fails.
step() {
    local name=$1
    shift
    if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then
        echo "=== $name: skipped (not in ONLY)"
        return 0
    fi
    local limit_var="TIMEOUT_$name"
    local limit=${!limit_var:-0}
    echo "=== $name: $* (time limit: ${limit}s, 0 = none)" | tee "$logs/$name.log"
    if [ "$limit" != 0 ] && ! declare -F "$1" > /dev/null; then  # timeout runs programs, not shell functions
        set -- timeout --signal=INT --kill-after=20 "$limit" "$@"
    fi
    "$@" 2>&1 | tee -a "$logs/$name.log"
    local status=${PIPESTATUS[0]}
    echo "=== $name: exit status $status" | tee -a "$logs/$name.log"
    if [ "$status" -ne 0 ]; then
        failed+=("$name (exit $status, log $logs/$name.log)")
    fi
}

# Which of the package's own requirements (install_requires + the [test] extra) are missing or too old.
missing_requirements() {
    "$PYTHON" - <<'EOF'
import importlib.metadata as metadata
import sys

try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement

missing = []
for text in metadata.requires("zs2_kernels") or []:
    requirement = Requirement(text)
    if requirement.marker is not None and not requirement.marker.evaluate({"extra": "test"}):
        continue
    try:
        version = metadata.version(requirement.name)
    except metadata.PackageNotFoundError:
        missing.append(f"{requirement} (not installed)")
        continue
    if not requirement.specifier.contains(version, prereleases=True):
        missing.append(f"{requirement} (found {version})")
print("missing requirements:" if missing else "every requirement is installed", *missing, sep="\n  ")
sys.exit(1 if missing else 0)
EOF
}

install() {
    # --no-build-isolation: use the installed setuptools and torch instead of fetching a build environment.
    if "$PYTHON" -m pip install --no-build-isolation -e ".[test]"; then
        return 0
    fi
    echo "full install failed (offline, or pip tried to fetch something); installing without dependencies"
    "$PYTHON" -m pip install --no-build-isolation --no-deps -e . || return 1
    missing_requirements
}

cuda_library() {
    local library=zs2_kernels/_lib/libzs2_cuda.so
    if [ -f "$library" ]; then
        echo "found $library"
    elif "$PYTHON" -c 'import sys; sys.path.insert(0, "csrc"); import build; sys.exit(build.find_nvcc() is None)'; then
        "$PYTHON" csrc/build.py "$library" || return 1
    else
        echo "nvcc not found: the optional CUDA C++ backend is skipped (its GPU tests skip, no 'cuda' benchmark rows)"
    fi
    "$PYTHON" -c 'from zs2_kernels.ops import cuda_library; print("CUDA C++ backend available:", cuda_library.is_available())'
}

step install install
step cuda_library cuda_library
step gpu_tests "$PYTHON" -m pytest tests -m gpu -v -rs
# Stable Diffusion 1.5's architecture at 512² with random weights (no weights on the machine): real step cost.
step bench_sampler_sd15 "$PYTHON" benchmarks/bench_sampler.py --device cuda --random-model sd15 --frames 8 \
    --steps 10 --repeats ${SAMPLER_REPEATS:-3} --compile --out "$base.json"
step bench_scaling_sd15 "$PYTHON" benchmarks/bench_scaling.py --device cuda --random-model sd15 \
    --frames 8 16 32 64 128 --chunk 8 --steps 10 --time-cap "${SCALING_TIME_CAP:-300}" --out "$base-scaling.json"
step bench_ops_chain "$PYTHON" benchmarks/bench_ops.py --device cuda --full-shapes --ops dependency_noise_chain \
    --out "$base.json"
step bench_ops_ema "$PYTHON" benchmarks/bench_ops.py --device cuda --full-shapes --ops momentum_update --out "$base.json"
step bench_sampler "$PYTHON" benchmarks/bench_sampler.py --device cuda --out "$base.json"

echo
echo "results: $base.json, $base.md; logs: $logs/"
if [ ${#failed[@]} -ne 0 ]; then
    printf 'FAILED steps:\n' >&2
    printf '  %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "all steps passed"
