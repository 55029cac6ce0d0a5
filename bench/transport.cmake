# Link throughput against plain sockets over loopback.
add_executable(bench_link bench_link.c baseline.c)
target_include_directories(bench_link PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_SOURCE_DIR}/bench)
target_link_libraries(bench_link PRIVATE vfmig_transport vfmig_common)
# Candidates for per-frame integrity without encryption, one core (issue 13: GMAC chosen).
add_executable(bench_mac bench_mac.c)
target_link_libraries(bench_mac PRIVATE PkgConfig::LIBCRYPTO)
