# Link throughput against plain sockets over loopback.
add_executable(bench_link bench_link.c baseline.c)
target_include_directories(bench_link PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_SOURCE_DIR}/bench)
target_link_libraries(bench_link PRIVATE vfmig_transport vfmig_common)
