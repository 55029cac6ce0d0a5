# Whole-migration benchmarks.
vfmig_add_bench(bench_blackout bench_blackout.c baseline.c)
