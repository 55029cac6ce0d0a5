# Tests of compress/: codecs, delta cache, chooser; and the codec fuzz corpus replay.
vfmig_add_test(test_codec SOURCES test_codec.c LIBS vfmig_compress vfmig_common TIMEOUT 60)
vfmig_add_test(fuzz_codec_corpus SOURCES fuzz/fuzz_codec.c fuzz/replay_main.c
  LIBS vfmig_compress vfmig_common ARGS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus/codec TIMEOUT 60)
# Writes the seed corpus: fuzz_codec_seeds tests/fuzz/corpus/codec (not a test).
add_executable(fuzz_codec_seeds fuzz/fuzz_codec_seeds.c)
target_link_libraries(fuzz_codec_seeds PRIVATE vfmig_compress vfmig_common)
if(VFMIG_FUZZ)
  add_executable(fuzz_codec fuzz/fuzz_codec.c)
  target_compile_options(fuzz_codec PRIVATE -fsanitize=fuzzer)
  target_link_options(fuzz_codec PRIVATE -fsanitize=fuzzer)
  target_link_libraries(fuzz_codec PRIVATE vfmig_compress vfmig_common)
endif()
