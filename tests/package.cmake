# Packaging: the exported ABI of libvfmig.so, the bash completion, the JSON schema of the CLI.
if(VFMIG_BUILD_SHARED)
  add_test(NAME abi COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_abi.sh ${PROJECT_SOURCE_DIR}/include
           ${PROJECT_SOURCE_DIR}/include/vfmig.map $<TARGET_FILE:vfmig_shared> $<TARGET_FILE:vfmig>)
  set_tests_properties(abi PROPERTIES TIMEOUT 30 SKIP_RETURN_CODE 77 LABELS package)
endif()
add_test(NAME completion COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_completion.sh
         $<TARGET_FILE:vfmig_cli> ${PROJECT_SOURCE_DIR}/cli/vfmig.bash-completion)
set_tests_properties(completion PROPERTIES TIMEOUT 30 LABELS package)
add_test(NAME cli_options COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_cli_pkg.sh $<TARGET_FILE:vfmig_cli> options)
set_tests_properties(cli_options PROPERTIES TIMEOUT 60 LABELS "package;integration")
add_test(NAME cli_json_schema COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_cli_pkg.sh $<TARGET_FILE:vfmig_cli> schema
         ${PROJECT_SOURCE_DIR}/schema/vfmig-result.schema.json ${CMAKE_CURRENT_SOURCE_DIR}/validate_json.py)
set_tests_properties(cli_json_schema PROPERTIES TIMEOUT 120 SKIP_RETURN_CODE 77 LABELS "package;integration")
if(VFMIG_BUILD_BENCH)
  add_test(NAME bench_options COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_bench_opts.sh
           $<TARGET_FILE:bench_codec> $<TARGET_FILE:bench_link> $<TARGET_FILE:bench_blackout>)
  set_tests_properties(bench_options PROPERTIES TIMEOUT 30 LABELS package)
endif()
# The JSON writer of the command and the benchmarks (common/json.h).
vfmig_add_test(test_json SOURCES test_json.c LIBS vfmig_json LABELS package TIMEOUT 30)
