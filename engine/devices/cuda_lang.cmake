# Included by the top-level CMakeLists.txt before any target: the CUDA language has to be enabled
# in the scope of the library target that carries the CUDA device's objects. Never required.
option(VFMIG_CUDA "Build the CUDA device when the CUDA toolkit is found" ON)
set(VFMIG_HAVE_CUDA OFF)
if(VFMIG_CUDA)
  include(CheckLanguage)
  find_package(CUDAToolkit QUIET)
  if(CUDAToolkit_FOUND)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      # Ampere and Hopper (H100/H200) natively; nvcc 13 has dropped the old default (sm_52).
      set(CMAKE_CUDA_ARCHITECTURES 80 90)
    endif()
    check_language(CUDA)
    if(CMAKE_CUDA_COMPILER)
      enable_language(CUDA)
      set(VFMIG_HAVE_CUDA ON)
    endif()
  endif()
endif()
