# cmake/library.cmake - libvfmig.so: the objects of libvfmig.a, exporting only the API.
#
# Two guards keep internals out of the dynamic symbol table: the parts compile with hidden
# visibility (VFMIG_API marks the API default), and include/vfmig.map lists the API under a
# version node with `local: *` for everything else (tests/test_abi.sh checks both against the
# headers). libvfmig.a keeps its internals: the tests and benchmarks link them.
include(GNUInstallDirs)
set(VFMIG_SOVERSION 0) # bumped when a function is removed or changes meaning (include/ABI.md)
set(VFMIG_MAP ${PROJECT_SOURCE_DIR}/include/vfmig.map)

# Where the static library is imported from (install tree) it gets only the include directory;
# its link dependencies are listed by cmake/install.cmake's package file.
target_include_directories(vfmig PUBLIC $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
set_target_properties(vfmig PROPERTIES EXPORT_NAME vfmig_static)

if(VFMIG_BUILD_SHARED)
  set_target_properties(vfmig_shared PROPERTIES
    OUTPUT_NAME vfmig
    EXPORT_NAME vfmig
    VERSION ${PROJECT_VERSION}
    SOVERSION ${VFMIG_SOVERSION}
    C_VISIBILITY_PRESET hidden
    LINK_DEPENDS ${VFMIG_MAP})
  target_include_directories(vfmig_shared PUBLIC
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include> $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  target_link_libraries(vfmig_shared PRIVATE ${VFMIG_DEPS})
  target_link_options(vfmig_shared PRIVATE "LINKER:--version-script=${VFMIG_MAP}")
  if(NOT VFMIG_SANITIZE)
    # Every symbol resolved at link time: a dependency missing from VFMIG_DEPS fails here, not
    # in an embedder's build. (Sanitizer runtimes are resolved by the executable.)
    target_link_options(vfmig_shared PRIVATE "LINKER:--no-undefined")
  endif()
  add_library(vfmig::vfmig ALIAS vfmig_shared)
else()
  add_library(vfmig::vfmig ALIAS vfmig)
endif()
