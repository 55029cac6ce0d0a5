# Dirty-source costs (issue 10): hash tracker against plain XXH3, uffd-wp / soft-dirty re-arm.
vfmig_add_bench(bench_tracking bench_tracking.c)
