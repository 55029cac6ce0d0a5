# cmake/install.cmake - what `cmake --install` puts where: headers, libvfmig.so/.a, the vfmig
# command, its man page and bash completion, vfmig.pc, and the CMake package
# (find_package(vfmig) gives vfmig::vfmig; COMPONENTS static gives vfmig::vfmig_static too).
include(CMakePackageConfigHelpers)
set(VFMIG_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/vfmig)

install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        COMPONENT dev FILES_MATCHING PATTERN "*.h")
install(TARGETS vfmig EXPORT vfmig-static-targets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev)
install(EXPORT vfmig-static-targets NAMESPACE vfmig:: DESTINATION ${VFMIG_CMAKEDIR} COMPONENT dev)
if(VFMIG_BUILD_SHARED)
  install(TARGETS vfmig_shared EXPORT vfmig-shared-targets
          LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT lib NAMELINK_COMPONENT dev)
  install(EXPORT vfmig-shared-targets NAMESPACE vfmig:: DESTINATION ${VFMIG_CMAKEDIR} COMPONENT dev)
endif()
install(TARGETS vfmig_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT bin)

# The package file: the static library needs its dependencies found again on the user's side
# (the shared one carries them itself).
set(VFMIG_PC_REQUIRES_PRIVATE "liblz4 libzstd libxxhash hwloc libcrypto")
set(VFMIG_CONFIG_PKG_MODULES "LZ4 liblz4 ZSTD libzstd XXHASH libxxhash HWLOC hwloc LIBCRYPTO libcrypto")
if(VFMIG_HAVE_RDMA)
  string(APPEND VFMIG_PC_REQUIRES_PRIVATE " libibverbs librdmacm")
  string(APPEND VFMIG_CONFIG_PKG_MODULES " IBVERBS libibverbs RDMACM librdmacm")
endif()
# The CUDA device links the CUDA runtime statically into libvfmig.so; the archive leaves it to
# the user's link, which finds it again (CUDAToolkit in the CMake package, -L/-l in vfmig.pc).
set(VFMIG_ARCHIVE_LIBS "-pthread -lm")
set(VFMIG_CONFIG_NEEDS_CUDA OFF)
if(VFMIG_HAVE_CUDA)
  set(VFMIG_CONFIG_NEEDS_CUDA ON)
  string(PREPEND VFMIG_ARCHIVE_LIBS "-L${CUDAToolkit_LIBRARY_DIR} -lcudart_static -ldl -lrt ")
endif()
# Without libvfmig.so, -lvfmig is the archive: its dependencies are not private then.
if(VFMIG_BUILD_SHARED)
  set(VFMIG_PC_REQUIRES "")
  set(VFMIG_PC_LIBS "")
  set(VFMIG_PC_LIBS_PRIVATE "${VFMIG_ARCHIVE_LIBS}")
else()
  set(VFMIG_PC_REQUIRES "${VFMIG_PC_REQUIRES_PRIVATE}")
  set(VFMIG_PC_REQUIRES_PRIVATE "")
  set(VFMIG_PC_LIBS "${VFMIG_ARCHIVE_LIBS}")
  set(VFMIG_PC_LIBS_PRIVATE "")
endif()
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/vfmig-config.cmake.in
  ${PROJECT_BINARY_DIR}/vfmig-config.cmake INSTALL_DESTINATION ${VFMIG_CMAKEDIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/vfmig-config-version.cmake
  COMPATIBILITY SameMinorVersion) # 0.x: a minor release may break the ABI (SOVERSION moves with it)
install(FILES ${PROJECT_BINARY_DIR}/vfmig-config.cmake ${PROJECT_BINARY_DIR}/vfmig-config-version.cmake
        DESTINATION ${VFMIG_CMAKEDIR} COMPONENT dev)

# vfmig.pc, relocatable: paths are relative to where the file is installed.
file(RELATIVE_PATH VFMIG_PC_TO_PREFIX /${CMAKE_INSTALL_LIBDIR}/pkgconfig /)
string(REGEX REPLACE "/$" "" VFMIG_PC_TO_PREFIX "${VFMIG_PC_TO_PREFIX}")
configure_file(${PROJECT_SOURCE_DIR}/cmake/vfmig.pc.in ${PROJECT_BINARY_DIR}/vfmig.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/vfmig.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT dev)

# The man page is the command's own --help text (cmake/manpage.cmake), so it cannot drift.
add_custom_command(OUTPUT ${PROJECT_BINARY_DIR}/vfmig.1
  COMMAND ${CMAKE_COMMAND} -DVFMIG=$<TARGET_FILE:vfmig_cli> -DOUT=${PROJECT_BINARY_DIR}/vfmig.1
          -DVERSION=${PROJECT_VERSION} -P ${PROJECT_SOURCE_DIR}/cmake/manpage.cmake
  DEPENDS vfmig_cli ${PROJECT_SOURCE_DIR}/cmake/manpage.cmake
  COMMENT "Writing the man page vfmig.1 from vfmig --help")
add_custom_target(vfmig_man ALL DEPENDS ${PROJECT_BINARY_DIR}/vfmig.1)
install(FILES ${PROJECT_BINARY_DIR}/vfmig.1 DESTINATION ${CMAKE_INSTALL_MANDIR}/man1 COMPONENT bin)
install(FILES ${PROJECT_SOURCE_DIR}/cli/vfmig.bash-completion
        DESTINATION ${CMAKE_INSTALL_DATADIR}/bash-completion/completions RENAME vfmig COMPONENT bin)
# The contract of `vfmig ... --json` (tests/test_cli_pkg.sh validates the command against it).
install(FILES ${PROJECT_SOURCE_DIR}/schema/vfmig-result.schema.json ${PROJECT_SOURCE_DIR}/schema/vfmig-progress.schema.json
        DESTINATION ${CMAKE_INSTALL_DATADIR}/vfmig/schema COMPONENT bin)
