# Tests of engine/devices/.
vfmig_add_test(test_simvf SOURCES test_simvf.c LIBS vfmig_devices vfmig_common TIMEOUT 60)
# Dirty sources beyond the simulated bitmap (issue 10): hash tracker, host memory (uffd-wp /
# soft-dirty), each under racing writers and in a live migration verified byte for byte.
vfmig_add_test(test_dirty_sources SOURCES test_dirty_sources.c TIMEOUT 120)
# The CUDA device: runs on a machine with a GPU, skips (77) with the reason elsewhere.
vfmig_add_test(test_cuda SOURCES test_cuda.c TIMEOUT 120)
