# Decide the instruction set the C++ (CPU) sources are compiled for; sets LMGNN_CPU_MARCH
# (a -march value, or "" for the compiler's default).
#  - AUTO: x86-64-v3 (AVX2, FMA, BMI1/2, F16C, LZCNT, MOVBE: Intel Haswell / AMD Zen and
#    later) on x86-64 when the compiler accepts it and the building CPU runs it, else the
#    compiler's default. The gather and scatter loops of the CPU kernels then use 256-bit
#    vectors (measured: the forward gather of the uniform 128-channel aggregation benchmark
#    block took half the time of the SSE2 build).
#  - OFF: the compiler's default (portable to any CPU of the architecture).
#  - anything else: passed as -march=<value> (native, x86-64-v4, ...), unchecked.
# The choice is recorded in _build_config.py; lmgnn_fast refuses to load an x86-64-v3 build
# on a CPU without those instructions (a clear ImportError instead of SIGILL).
set(LMGNN_CPU_MARCH "")
string(TOUPPER "${LMGNN_CPU_ISA}" _lmgnn_isa)
if(_lmgnn_isa STREQUAL "OFF")
  message(STATUS "lmgnn_fast: CPU kernels for the compiler's default instruction set (LMGNN_CPU_ISA=OFF)")
  return()
endif()
if(NOT _lmgnn_isa STREQUAL "AUTO")
  set(LMGNN_CPU_MARCH "${LMGNN_CPU_ISA}")
  message(STATUS "lmgnn_fast: CPU kernels with -march=${LMGNN_CPU_MARCH}")
  return()
endif()

if(NOT CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$" OR CMAKE_CROSSCOMPILING)
  message(STATUS "lmgnn_fast: CPU kernels for the compiler's default instruction set (not an x86-64 host build)")
  return()
endif()
include(CheckCXXSourceRuns)
set(CMAKE_REQUIRED_FLAGS "-march=x86-64-v3")
check_cxx_source_runs([=[
int main() {
  __builtin_cpu_init();
  return (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
          __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2") &&
          __builtin_cpu_supports("f16c")) ? 0 : 1;
}
]=] LMGNN_HOST_RUNS_X86_64_V3)
unset(CMAKE_REQUIRED_FLAGS)
if(LMGNN_HOST_RUNS_X86_64_V3)
  set(LMGNN_CPU_MARCH "x86-64-v3")
  message(STATUS "lmgnn_fast: CPU kernels with -march=x86-64-v3 (LMGNN_CPU_ISA=AUTO)")
else()
  message(STATUS "lmgnn_fast: CPU kernels for the compiler's default instruction set (this CPU or compiler lacks x86-64-v3)")
endif()
