// tdflow._cpu: which instruction-set extensions this CPU (and its OS) offers, and how this build
// was compiled. It is compiled for the architecture's baseline, never with -march, so that
// importing it cannot fault: python/tdflow/_dispatch.py reads it to choose tdflow._core_<level>.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <map>
#include <string>

#if defined(__x86_64__) || defined(_M_X64)
#define TDFLOW_X86 1
#if defined(_MSC_VER)
#include <intrin.h>
#else
#include <cpuid.h>
#endif
#endif

#ifdef _OPENMP
#include <omp.h>
#if defined(__unix__) || defined(__APPLE__)
#include <dlfcn.h>
#elif defined(_WIN32)
#define NOMINMAX
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#endif
#endif

namespace py = pybind11;

namespace {

#ifdef TDFLOW_X86
struct Regs {
  unsigned a = 0, b = 0, c = 0, d = 0;
};

Regs cpuid(unsigned leaf, unsigned sub = 0) {
  Regs r;
#if defined(_MSC_VER)
  int v[4];
  __cpuidex(v, static_cast<int>(leaf), static_cast<int>(sub));
  r = {unsigned(v[0]), unsigned(v[1]), unsigned(v[2]), unsigned(v[3])};
#else
  if (!__get_cpuid_count(leaf, sub, &r.a, &r.b, &r.c, &r.d)) r = Regs{};
#endif
  return r;
}

// XCR0: which register states the OS saves on a context switch (AVX needs 0x6, AVX-512 0xe6).
unsigned long long xcr0() {
#if defined(_MSC_VER)
  return _xgetbv(0);
#else
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<unsigned long long>(hi) << 32) | lo;
#endif
}

bool bit(unsigned reg, int i) { return (reg >> i) & 1u; }

// The features that define the x86-64 psABI levels v2, v3 and v4 (Linux /proc/cpuinfo names),
// each true only when the OS also saves the registers it needs.
std::map<std::string, bool> features() {
  std::map<std::string, bool> f;
  const unsigned max_leaf = cpuid(0).a;
  const Regs l1 = cpuid(1);
  const Regs l7 = max_leaf >= 7 ? cpuid(7, 0) : Regs{};
  const Regs e1 = cpuid(0x80000000u).a >= 0x80000001u ? cpuid(0x80000001u) : Regs{};
  const bool osxsave = bit(l1.c, 27);
  const unsigned long long x = osxsave ? xcr0() : 0;
  const bool os_avx = (x & 0x6) == 0x6;
#if defined(__APPLE__)
  // macOS turns the AVX-512 state on at a thread's first AVX-512 instruction: XCR0 lags.
  const bool os_avx512 = os_avx;
#else
  const bool os_avx512 = os_avx && (x & 0xe0) == 0xe0;
#endif
  f["sse2"] = bit(l1.d, 26);
  f["pni"] = bit(l1.c, 0);  // SSE3
  f["ssse3"] = bit(l1.c, 9);
  f["sse4_1"] = bit(l1.c, 19);
  f["sse4_2"] = bit(l1.c, 20);
  f["popcnt"] = bit(l1.c, 23);
  f["cx16"] = bit(l1.c, 13);
  f["lahf_lm"] = bit(e1.c, 0);
  f["avx"] = bit(l1.c, 28) && os_avx;
  f["avx2"] = bit(l7.b, 5) && os_avx;
  f["fma"] = bit(l1.c, 12) && os_avx;
  f["f16c"] = bit(l1.c, 29) && os_avx;
  f["bmi1"] = bit(l7.b, 3);
  f["bmi2"] = bit(l7.b, 8);
  f["abm"] = bit(e1.c, 5);  // LZCNT
  f["movbe"] = bit(l1.c, 22);
  f["avx512f"] = bit(l7.b, 16) && os_avx512;
  f["avx512dq"] = bit(l7.b, 17) && os_avx512;
  f["avx512cd"] = bit(l7.b, 28) && os_avx512;
  f["avx512bw"] = bit(l7.b, 30) && os_avx512;
  f["avx512vl"] = bit(l7.b, 31) && os_avx512;
  return f;
}
#else
std::map<std::string, bool> features() { return {}; }
#endif

// The compiler's own answer for the x86-64 levels (GCC >= 12), to cross-check features().
std::map<std::string, bool> compiler_levels() {
  std::map<std::string, bool> out;
#if defined(TDFLOW_X86) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
  __builtin_cpu_init();
  out["x86-64-v2"] = __builtin_cpu_supports("x86-64-v2");
  out["x86-64-v3"] = __builtin_cpu_supports("x86-64-v3");
  out["x86-64-v4"] = __builtin_cpu_supports("x86-64-v4");
#endif
  return out;
}

std::string compiler() {
#if defined(__clang__)
  return "Clang " __clang_version__;
#elif defined(__GNUC__)
  return "GCC " __VERSION__;
#elif defined(_MSC_VER)
  return "MSVC " + std::to_string(_MSC_FULL_VER);
#else
  return "unknown";
#endif
}

// The OpenMP runtime this build links: its specification date (_OPENMP, e.g. 201511 for 4.5)
// and the file of the library that defines omp_get_max_threads.
py::dict openmp() {
  py::dict out;
#ifdef _OPENMP
  out["spec"] = _OPENMP;
  std::string path;
#if defined(__unix__) || defined(__APPLE__)
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&omp_get_max_threads), &info) && info.dli_fname)
    path = info.dli_fname;
#elif defined(_WIN32)
  HMODULE lib = nullptr;
  char buf[MAX_PATH];
  if (GetModuleHandleExA(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS |
                             GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
                         reinterpret_cast<LPCSTR>(&omp_get_max_threads), &lib) &&
      GetModuleFileNameA(lib, buf, MAX_PATH))
    path = buf;
#endif
  out["library"] = path;
#endif
  return out;
}

}  // namespace

PYBIND11_MODULE(_cpu, mod) {
  mod.doc() = "tdflow's CPU feature probe and build settings (private; see tdflow._dispatch)";
#ifdef TDFLOW_X86
  mod.attr("arch") = "x86_64";
#elif defined(__aarch64__) || defined(_M_ARM64)
  mod.attr("arch") = "aarch64";
#else
  mod.attr("arch") = "other";
#endif
  mod.def("features", &features, "{name: bool} for the features of the x86-64 levels ({} elsewhere).");
  mod.def("compiler_levels", &compiler_levels,
          "{level: bool} from __builtin_cpu_supports (GCC >= 12 only; {} elsewhere).");
  mod.def("openmp", &openmp, "{'spec': _OPENMP, 'library': path} ({} without OpenMP).");
  mod.attr("compiler") = compiler();
  mod.attr("eigen_version") = TDFLOW_EIGEN_VERSION;
  mod.attr("build_type") = TDFLOW_BUILD_TYPE;
  mod.attr("level_flags") = TDFLOW_LEVEL_FLAGS;  // "level=flags|level=flags"
}
