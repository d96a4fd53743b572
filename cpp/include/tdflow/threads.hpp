// OpenMP helpers. Every parallel loop in tdflow splits work into blocks whose boundaries do
// not depend on the thread count, and each output element is written by exactly one block in
// a fixed order, so results are bitwise identical for 1 and N threads.
#pragma once

#include <Eigen/Core>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace tdflow {

inline bool has_openmp() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

inline int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

inline void set_max_threads(int n) {
#ifdef _OPENMP
  omp_set_num_threads(n < 1 ? 1 : n);
#else
  (void)n;
#endif
}

// Below this many multiply-adds a parallel region costs more than it saves.
constexpr double kParallelMinWork = 2.0e5;

// Runs body(b) for b in [0, n_blocks), in parallel when the work is large enough.
template <class Body>
void parallel_blocks(Eigen::Index n_blocks, double work, Body&& body) {
#ifdef _OPENMP
  // an `if(false)` parallel region still builds a team (about a microsecond): branch instead
  if (n_blocks > 1 && work >= kParallelMinWork && !omp_in_parallel() && omp_get_max_threads() > 1) {
#pragma omp parallel for schedule(dynamic, 1)
    for (Eigen::Index b = 0; b < n_blocks; ++b) body(b);
    return;
  }
#endif
  (void)work;
  for (Eigen::Index b = 0; b < n_blocks; ++b) body(b);
}

}  // namespace tdflow
