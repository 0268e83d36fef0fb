#!/usr/bin/env bash
# Every benchmark, then the report: docs/benchmarks.md, docs/images/bench_*.png and the
# PASS/FAIL lines of the targets. About 60 minutes on 2 cores the first time (the dask stacks,
# the large mosaics and the long-search reference are made once and cached in
# benchmarks/_data/), about 50 minutes after that. Run it on a quiet machine.
#
#   benchmarks/run_all.sh              # measures whatever `import napari_kmeans_filter` loads
#   PYTHONPATH=$PWD/src benchmarks/run_all.sh   # a checkout that is not the installed one
set -euo pipefail
cd "$(dirname "$0")/.."

# A current numpy/scipy runs its matrix products about 2x slower under the OPENBLAS_CORETYPE /
# OPENBLAS_L2_SIZE this machine sets for old OpenBLAS builds: measure with BLAS's own choice.
run() { env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python "$@"; }

run -c "import napari_kmeans_filter as m; print('measuring', m.__file__)"
run benchmarks/bench_quantize.py --no-report    # the grid: <= 32 min + the last cell (--max-minutes)
run benchmarks/bench_dask.py --no-report        # 4 chunkings x 3 runs: ~3-10 min (+~2 min stacks, once)
run benchmarks/bench_startup.py --no-report     # ~2-3 min
run benchmarks/bench_features.py --no-report    # ~3-5 min once auto-k / dither exist
run benchmarks/bench_cli.py                     # ~10-15 min: needs pngquant, imagemagick (apt)
run benchmarks/bench_dither.py                  # ~2-4 min
run benchmarks/make_report.py
run benchmarks/make_report.py --summary
