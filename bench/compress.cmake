# Codec benchmark: the compress part against bare lz4/zstd, on the simulated VF's content.
add_executable(bench_codec bench_codec.c)
target_include_directories(bench_codec PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_SOURCE_DIR}/bench)
target_link_libraries(bench_codec PRIVATE vfmig vfmig_json PkgConfig::LZ4 PkgConfig::ZSTD m)
