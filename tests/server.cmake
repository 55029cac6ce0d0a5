# The server (engine/server.c) against hostile clients, its stop and limits (sessions, VF size,
# memory budget), and cancel of a blocked session in every phase (tests/test_server.c; uses the
# fault proxy to stall a link).
add_executable(test_server test_server.c fault_proxy.c)
target_include_directories(test_server PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_SOURCE_DIR}/tests)
target_link_libraries(test_server PRIVATE vfmig)
foreach(case hostile stop limits cancel hello caps budget)
  add_test(NAME server_${case} COMMAND test_server ${case})
  set_tests_properties(server_${case} PROPERTIES TIMEOUT 120 LABELS "hostile;server")
endforeach()
