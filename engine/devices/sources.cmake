# Dirty sources (issue 10). The CUDA device needs nvcc and the CUDA runtime (see cuda_lang.cmake);
# without the toolkit
# cuda_none.c answers every CUDA call with VFMIG_ENODEV and a message naming CUDA.
target_sources(vfmig_devices PRIVATE cuda_config.c hashtrack.c hostmem.c)
# The hash tracker's XXH3 also in an AVX2 build, picked at run time where the CPU has it.
if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64|amd64")
  target_sources(vfmig_devices PRIVATE hashtrack_avx2.c)
  set_source_files_properties(hashtrack_avx2.c PROPERTIES COMPILE_OPTIONS -mavx2)
  target_compile_definitions(vfmig_devices PRIVATE VFMIG_HT_AVX2=1)
endif()
if(VFMIG_HAVE_CUDA) # set by cuda_lang.cmake (top level)
  add_library(vfmig_cuda OBJECT cuda.cu)
  target_include_directories(vfmig_cuda PUBLIC ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR})
  set_target_properties(vfmig_cuda PROPERTIES POSITION_INDEPENDENT_CODE ON CUDA_VISIBILITY_PRESET hidden
                                              CUDA_ARCHITECTURES "${CMAKE_CUDA_ARCHITECTURES}")
  # The project's C flags (add_compile_options: -Wstrict-prototypes, sanitizers) are not nvcc's:
  # the CUDA file gets its own, warnings as errors when VFMIG_WERROR is on.
  set_property(TARGET vfmig_cuda PROPERTY COMPILE_OPTIONS "")
  target_compile_options(vfmig_cuda PRIVATE -Xcompiler=-Wall,-Wextra)
  if(VFMIG_WERROR)
    target_compile_options(vfmig_cuda PRIVATE -Werror=all-warnings -Xcompiler=-Werror)
  endif()
  target_link_libraries(vfmig_cuda PUBLIC CUDA::cudart_static)
  target_sources(vfmig PRIVATE $<TARGET_OBJECTS:vfmig_cuda>)
  target_link_libraries(vfmig PUBLIC CUDA::cudart_static)
  if(TARGET vfmig_shared)
    target_sources(vfmig_shared PRIVATE $<TARGET_OBJECTS:vfmig_cuda>)
    target_link_libraries(vfmig_shared PRIVATE CUDA::cudart_static)
  endif()
  message(STATUS "vfmig: CUDA device enabled (nvcc ${CMAKE_CUDA_COMPILER_VERSION})")
else()
  target_sources(vfmig_devices PRIVATE cuda_none.c)
  message(STATUS "vfmig: CUDA toolkit not found: the CUDA device is left out (--device cuda reports it)")
endif()
