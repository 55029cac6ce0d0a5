# Engine units and whole migrations (these need every part: link the whole library).
vfmig_add_test(test_engine_unit SOURCES test_engine_unit.c LABELS unit)
vfmig_add_test(test_session SOURCES test_session.c LABELS unit)

add_executable(test_migrate test_migrate.c)
target_include_directories(test_migrate PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_SOURCE_DIR}/tests)
target_link_libraries(test_migrate PRIVATE vfmig)
foreach(case local local_streams4 local_ranges_4k local_seq_2m_pages decode_pool decode_pool_delta
             codec_raw codec_lz4 codec_zstd codec_delta codec_auto_capped delta_cache_small_writes forced_switch_rounds two_procs
             two_procs_copying local_copying codec_delta_copying auth_ok encrypted encrypted_required)
  add_test(NAME migrate_${case} COMMAND test_migrate ${case})
  set_tests_properties(migrate_${case} PROPERTIES TIMEOUT 120 LABELS integration)
endforeach()
foreach(case kill_target_precopy kill_target_blackout kill_source_precopy kill_source_blackout
             layout_mismatch immutable_refused target_image_corrupt target_stray_write target_restore_fails
             source_read_fails cancel_precopy cancel_blackout cancel_target
             auth_wrong_key auth_target_has_no_key auth_source_has_no_key encryption_refused)
  add_test(NAME failure_${case} COMMAND test_migrate ${case})
  set_tests_properties(failure_${case} PROPERTIES TIMEOUT 120 LABELS failure)
endforeach()

# The vfmig command as operators and scripts use it.
add_test(NAME cli COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_cli.sh $<TARGET_FILE:vfmig_cli>)
set_tests_properties(cli PROPERTIES TIMEOUT 120 LABELS integration)

# What each verification mode proves: a bit flipped in target VRAM on each path a page can take.
add_executable(test_verify test_verify.c)
target_include_directories(test_verify PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_SOURCE_DIR}/tests)
target_link_libraries(test_verify PRIVATE vfmig)
foreach(kind raw delta delta_copied lz4_copied zero)
  foreach(when none resent after)
    foreach(mode applied readback full)
      add_test(NAME verify_${kind}_${when}_${mode} COMMAND test_verify ${kind} ${when} ${mode})
      set_tests_properties(verify_${kind}_${when}_${mode} PROPERTIES TIMEOUT 120 LABELS integration)
    endforeach()
  endforeach()
endforeach()

# The budget contract in the blackout: called off and retried, aborted, switched anyway, refused
# after a late verdict.
add_executable(test_budget test_budget.c)
target_include_directories(test_budget PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_SOURCE_DIR}/tests)
target_link_libraries(test_budget PRIVATE vfmig)
foreach(mode retry abort switch verdict)
  add_test(NAME migrate_budget_${mode} COMMAND test_budget ${mode})
  set_tests_properties(migrate_budget_${mode} PROPERTIES TIMEOUT 120 LABELS integration)
endforeach()
