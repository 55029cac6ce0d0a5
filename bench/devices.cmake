# Dirty-source costs (issue 10): hash tracker against plain XXH3, uffd-wp / soft-dirty re-arm.
vfmig_add_bench(bench_tracking bench_tracking.c)
# CUDA hash kernel against the GPU's copy bandwidth (bench/gpu/check.sh runs it; exit 77 without a GPU).
vfmig_add_bench(bench_gpu bench_gpu.c)
