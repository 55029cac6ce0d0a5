# Failure and hostile-input tests (tests/test_faults.c, tests/fault_proxy.c), the HELLO fuzz
# corpus replay, and the soak driver (test_faults soak N VRAM; see tests/soak.sh, not a ctest).
# Case names are read from test_faults.c so the table there is the only list.
add_executable(test_faults test_faults.c fault_proxy.c)
target_include_directories(test_faults PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_SOURCE_DIR}/tests)
target_link_libraries(test_faults PRIVATE vfmig)

file(READ ${CMAKE_CURRENT_SOURCE_DIR}/test_faults.c VFMIG_FAULTS_SRC)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/test_faults.c)
string(REGEX MATCHALL "\n    {\"[a-z0-9_]+\", P_" VFMIG_FAULT_ROWS "${VFMIG_FAULTS_SRC}")
string(REGEX MATCHALL "{\"[a-z0-9_]+\", f_" VFMIG_FORGE_ROWS "${VFMIG_FAULTS_SRC}")
foreach(row ${VFMIG_FAULT_ROWS})
  string(REGEX REPLACE ".*{\"([a-z0-9_]+)\".*" "\\1" case "${row}")
  add_test(NAME fault_${case} COMMAND test_faults fault_${case})
  set_tests_properties(fault_${case} PROPERTIES TIMEOUT 30 SKIP_RETURN_CODE 77 LABELS "failure;faults")
endforeach()
foreach(row ${VFMIG_FORGE_ROWS})
  string(REGEX REPLACE ".*{\"([a-z0-9_]+)\".*" "\\1" case "${row}")
  add_test(NAME forge_${case} COMMAND test_faults forge_${case})
  set_tests_properties(forge_${case} PROPERTIES TIMEOUT 30 SKIP_RETURN_CODE 77 LABELS "hostile;faults")
endforeach()

if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/replay_main.c)
  vfmig_add_test(fuzz_hello_corpus SOURCES fuzz/fuzz_hello.c fuzz/replay_main.c LABELS "fuzz;faults"
                 ARGS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus/hello TIMEOUT 60)
endif()
if(VFMIG_FUZZ)
  add_executable(fuzz_hello fuzz/fuzz_hello.c)
  target_include_directories(fuzz_hello PRIVATE ${PROJECT_SOURCE_DIR})
  target_compile_options(fuzz_hello PRIVATE -fsanitize=fuzzer)
  target_link_options(fuzz_hello PRIVATE -fsanitize=fuzzer)
  target_link_libraries(fuzz_hello PRIVATE vfmig)
endif()
