# transport/ tests: framing, endpoints, TCP links on loopback, RDMA bookkeeping (and RDMA links,
# which skip without a device).
set(VFMIG_TRANSPORT_LIBS vfmig_transport vfmig_common)
vfmig_add_test(test_wire SOURCES test_wire.c LIBS ${VFMIG_TRANSPORT_LIBS} LABELS transport TIMEOUT 30)
vfmig_add_test(test_endpoint SOURCES test_endpoint.c LIBS ${VFMIG_TRANSPORT_LIBS} LABELS transport TIMEOUT 30)
vfmig_add_test(test_link_tcp SOURCES test_link_tcp.c LIBS ${VFMIG_TRANSPORT_LIBS} LABELS transport TIMEOUT 60)
vfmig_add_test(test_link_rdma_core SOURCES test_link_rdma_core.c LIBS ${VFMIG_TRANSPORT_LIBS} LABELS transport TIMEOUT 30)
vfmig_add_test(test_link_rdma SOURCES test_link_rdma.c LIBS ${VFMIG_TRANSPORT_LIBS} LABELS transport TIMEOUT 60)
if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/replay_main.c)
  vfmig_add_test(fuzz_frame_corpus SOURCES fuzz/fuzz_frame.c fuzz/replay_main.c
                 LIBS ${VFMIG_TRANSPORT_LIBS} LABELS "transport;fuzz"
                 ARGS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus/frame TIMEOUT 60)
endif()
if(VFMIG_FUZZ)
  add_executable(fuzz_frame fuzz/fuzz_frame.c)
  target_include_directories(fuzz_frame PRIVATE ${PROJECT_SOURCE_DIR})
  target_compile_options(fuzz_frame PRIVATE -fsanitize=fuzzer)
  target_link_options(fuzz_frame PRIVATE -fsanitize=fuzzer)
  target_link_libraries(fuzz_frame PRIVATE ${VFMIG_TRANSPORT_LIBS})
endif()
vfmig_add_test(test_aead SOURCES test_aead.c LIBS ${VFMIG_TRANSPORT_LIBS} LABELS transport TIMEOUT 30)
# RDMA link throughput tool for the soft-RoCE VM run (tests/rdma-vm/run.sh); not a ctest test.
add_executable(rdma_link_bw rdma-vm/rdma_link_bw.c)
target_include_directories(rdma_link_bw PRIVATE ${PROJECT_SOURCE_DIR})
target_link_libraries(rdma_link_bw PRIVATE ${VFMIG_TRANSPORT_LIBS})
# The link's read path (tcp_read, recv_sealed, recv_tagged) under any bytes from a peer.
if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/replay_main.c)
  vfmig_add_test(fuzz_link_corpus SOURCES fuzz/fuzz_link.c fuzz/replay_main.c
                 LIBS ${VFMIG_TRANSPORT_LIBS} LABELS "transport;fuzz"
                 ARGS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus/link TIMEOUT 60)
endif()
# Writes its seed corpus: fuzz_link_seeds tests/fuzz/corpus/link (not a test).
add_executable(fuzz_link_seeds fuzz/fuzz_link_seeds.c)
target_include_directories(fuzz_link_seeds PRIVATE ${PROJECT_SOURCE_DIR})
target_link_libraries(fuzz_link_seeds PRIVATE ${VFMIG_TRANSPORT_LIBS})
if(VFMIG_FUZZ)
  add_executable(fuzz_link fuzz/fuzz_link.c)
  target_include_directories(fuzz_link PRIVATE ${PROJECT_SOURCE_DIR})
  target_compile_options(fuzz_link PRIVATE -fsanitize=fuzzer)
  target_link_options(fuzz_link PRIVATE -fsanitize=fuzzer)
  target_link_libraries(fuzz_link PRIVATE ${VFMIG_TRANSPORT_LIBS})
endif()
