# Whole-migration benchmarks.
vfmig_add_bench(bench_blackout bench_blackout.c baseline.c)
# The plain-socket pump the page path is compared with (bench/bench_pagepath.sh).
vfmig_add_bench(bench_pump bench_pump.c baseline.c)
