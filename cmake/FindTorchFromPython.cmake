# Locate the torch that the running Python imports (the one the module will be loaded
# into) and point find_package(Torch) at its CMake files. Nothing is downloaded.
execute_process(
  COMMAND "${Python_EXECUTABLE}" -c
    "import torch; print(torch.utils.cmake_prefix_path); print(torch.__version__); print(torch.version.cuda or '')"
  OUTPUT_VARIABLE _lmgnn_torch_out
  RESULT_VARIABLE _lmgnn_torch_rc
  ERROR_VARIABLE _lmgnn_torch_err
  OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT _lmgnn_torch_rc EQUAL 0)
  message(FATAL_ERROR "lmgnn_fast: cannot import torch with ${Python_EXECUTABLE}. Install torch "
                      "first and build with --no-build-isolation.\n${_lmgnn_torch_err}")
endif()
string(REPLACE "\n" ";" _lmgnn_torch_out "${_lmgnn_torch_out}")
list(GET _lmgnn_torch_out 0 _lmgnn_torch_prefix)
list(GET _lmgnn_torch_out 1 LMGNN_TORCH_VERSION)
list(LENGTH _lmgnn_torch_out _n)
set(LMGNN_TORCH_CUDA "")
if(_n GREATER 2)
  list(GET _lmgnn_torch_out 2 LMGNN_TORCH_CUDA)
endif()
list(PREPEND CMAKE_PREFIX_PATH "${_lmgnn_torch_prefix}")
message(STATUS "lmgnn_fast: torch ${LMGNN_TORCH_VERSION} (CUDA '${LMGNN_TORCH_CUDA}') at ${_lmgnn_torch_prefix}")
if(LMGNN_TORCH_VERSION VERSION_LESS 2.11 OR LMGNN_TORCH_VERSION VERSION_GREATER_EQUAL 2.15)
  message(WARNING "lmgnn_fast is tested with torch 2.11 to 2.14; found ${LMGNN_TORCH_VERSION}")
endif()
