#!/usr/bin/env bash
# One-shot GPU benchmark for a lent H100/H200 (< 8 min in total; each stage has a timeout).
# Run from the repository root on the GPU machine:
#   bash scripts/bench_gpu.sh
# Assumes `python3 -c "import jax"` works with CUDA (jax[cuda12] installed). Writes the log
# to $OUT/log when $OUT is set. Stages:
#   1. machine: nvidia-smi, jax.devices()
#   2. pip install -e . --no-deps
#   3. HBM copy bandwidth at 512³ (512 MiB, beyond L2) + transport: explicit, implicit,
#      spectral at 256³ and 512³, float32, 5 steps, with % of the measured HBM roofline
#      and of the data-sheet bandwidth
#   4. cells: 1e6 and 1e7 cells on a 128³ grid (fixed + receptors, nearest + linear)
set -euo pipefail
export PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
cd "$(dirname "$0")/.."
if [[ -n "${OUT:-}" ]]; then
  mkdir -p "$OUT"
  exec > >(tee -a "$OUT/log") 2>&1
fi
t_start=$(date +%s)
stage() { echo; echo "== $* ($(( $(date +%s) - t_start )) s elapsed) =="; }

stage machine
date -u
nvidia-smi --query-gpu=name,memory.total --format=csv || echo "nvidia-smi unavailable"
$PYTHON -c "import jax; print('jax', jax.__version__, jax.devices())"

stage install
$PYTHON -m pip install -q -e . --no-deps || echo "pip install -e . failed (offline build backend?); using PYTHONPATH"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # import jaxcell from the tree either way
$PYTHON -c "import jaxcell, jax; print('jaxcell from', jaxcell.__file__)"
git rev-parse --short HEAD 2>/dev/null || true

stage "transport 256³/512³ + HBM roofline"
# flags used by bench_transport.run: sizes, steps, solvers, repeat, numpy_baseline
timeout -k 10 240 $PYTHON - <<'PY' || echo "transport stage failed or timed out (rc=$?)"
import sys
sys.path.insert(0, "scripts")
import jax
import bench_transport as bt

# Data-sheet HBM bandwidth (GB/s) by device kind; None when unknown.
SPEC = {"H100 80GB HBM3": 3350.0, "H100": 3350.0, "H100 PCIe": 2000.0, "H200": 4800.0, "H100 NVL": 3900.0}
kind = jax.devices()[0].device_kind
spec = next((v for k, v in sorted(SPEC.items(), key=lambda kv: -len(kv[0])) if k in kind), None)
bw512 = bt.copy_bandwidth(512, repeat=5, passes=10)  # 512³ float32 = 512 MiB, far beyond L2
hbm = max(bw512["jax"], bw512["jax-stream"])
print(f"device {kind}: copy bandwidth 512³: jax x+0 {bw512['jax']:.0f} GB/s, in-place stream "
      f"{bw512['jax-stream']:.0f} GB/s; data sheet {spec} GB/s"
      + (f" -> measured = {100 * hbm / spec:.0f}% of data sheet" if spec else ""))
roof = hbm * 1e9 / 8
print(f"HBM roofline (measured 512³ bandwidth / 8 B per voxel-update) = {roof:.3g} voxel-updates/s")
print(f"{'solver':9} {'n':>4} {'vox-upd/s':>10} {'%HBM meas':>9} {'%HBM spec':>9} {'eff GB/s':>8}  (summary line)")
# One case per bt.run call so that each result (and its HBM fraction) is printed before the
# next compile: a timeout in the last case (spectral 512³) loses only that case.
for solver in ("explicit", "implicit", "spectral"):
    for n in (256, 512):
        try:
            (r,) = bt.run(sizes=(n,), steps=5, solvers=(solver,), repeat=2, numpy_baseline=False)
        except Exception as err:  # e.g. out of memory: keep going
            print(f"{solver} {n}: {type(err).__name__}: {err}", flush=True)
            continue
        gbs = 8 * r["rate"] / 1e9
        print(f"{r['solver']:9} {r['n']:>4} {r['rate']:>10.3g} {100 * r['rate'] / roof:>8.1f}% "
              + (f"{100 * gbs / spec:>8.1f}%" if spec else f"{'-':>9}") + f" {gbs:>8.0f}  <- HBM", flush=True)
PY

stage "cells 1e6/1e7 on 128³"
# bench_cells flags: --cells --n --steps --modes --couplings --solver --repeat --no-sort
timeout -k 10 150 $PYTHON scripts/bench_cells.py --cells 1e6,1e7 --n 128 --steps 5 --modes fixed,receptors \
  --couplings nearest,linear --solver explicit --repeat 2 || echo "cells stage failed or timed out (rc=$?)"

stage done
