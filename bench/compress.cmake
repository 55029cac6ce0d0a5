# Codec benchmark: links the compress part directly (the whole library may not link yet).
add_executable(bench_codec bench_codec.c)
target_include_directories(bench_codec PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_SOURCE_DIR}/bench)
target_link_libraries(bench_codec PRIVATE vfmig_compress vfmig_common PkgConfig::LZ4 PkgConfig::ZSTD m)
