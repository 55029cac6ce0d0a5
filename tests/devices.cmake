# Tests of engine/devices/.
vfmig_add_test(test_simvf SOURCES test_simvf.c LIBS vfmig_devices vfmig_common TIMEOUT 60)
# Dirty sources beyond the simulated bitmap (issue 10): hash tracker, host memory (uffd-wp /
# soft-dirty), each under racing writers and in a live migration verified byte for byte.
# One program, one ctest entry per part (the threaded ones, race and migrate, also under TSan).
# softdirty skips (77) on a kernel without CONFIG_MEM_SOFT_DIRTY (this machine's); tests/rdma-vm
# runs it for real in a Debian kernel that has it.
vfmig_add_test(test_dirty_sources_hash SOURCES test_dirty_sources.c ARGS hash TIMEOUT 60)
foreach(part hostmem race migrate softdirty)
  add_test(NAME test_dirty_sources_${part} COMMAND test_dirty_sources_hash ${part})
  set_tests_properties(test_dirty_sources_${part} PROPERTIES TIMEOUT 120 SKIP_RETURN_CODE 77)
endforeach()
# The CUDA device: runs on a machine with a GPU, skips (77) with the reason elsewhere.
vfmig_add_test(test_cuda SOURCES test_cuda.c TIMEOUT 120)
# The CLI's --device option: every dirty source verified and named in JSON; cuda fails naming CUDA.
add_test(NAME cli_devices COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_cli_devices.sh $<TARGET_FILE:vfmig_cli>)
set_tests_properties(cli_devices PROPERTIES TIMEOUT 120 LABELS integration)
