// OpenMP helpers. Every parallel loop in tdflow splits work into blocks whose boundaries do
// not depend on the thread count, and each output element is written by exactly one block in
// a fixed order, so results are bitwise identical for 1 and N threads.
//
// The thread count is process-wide: it lives here, not in OpenMP's per-thread ICV (which
// omp_set_num_threads changes for the calling thread only), and every parallel region passes it
// in a num_threads clause, so a count set from one Python thread holds in every other one.
#pragma once

#include <Eigen/Core>

#include <atomic>

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

namespace detail {
// 0 until set: then the OpenMP default (OMP_NUM_THREADS, else the number of cores)
inline std::atomic<int>& thread_count() {
  static std::atomic<int> n{0};
  return n;
}
}  // namespace detail

inline int max_threads() {
#ifdef _OPENMP
  const int n = detail::thread_count().load(std::memory_order_relaxed);
  return n > 0 ? n : omp_get_max_threads();
#else
  return 1;
#endif
}

inline void set_max_threads(int n) { detail::thread_count().store(n < 1 ? 1 : n); }

// Called before fork() (pthread_atfork): GNU OpenMP keeps the idle threads of the calling
// thread's team in a pool that a forked child, which has no such threads, would wait on forever
// at its first parallel region. Releasing the pool first lets the child build a fresh one (the
// parent rebuilds its own at its next parallel region, about 0.1 ms). Without the OpenMP 5.0
// pause API the child runs single-threaded until set_max_threads is called.
// (GCC's libgomp has the pause API from GCC 10 on but still reports OpenMP 4.5.)
#if defined(_OPENMP) && (_OPENMP >= 201811 || (defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 10))
#define TDFLOW_OMP_PAUSE 1
#endif
inline void before_fork() {
#ifdef TDFLOW_OMP_PAUSE
  if (!omp_in_parallel()) omp_pause_resource_all(omp_pause_soft);
#endif
}
inline void in_forked_child() {
#if defined(_OPENMP) && !defined(TDFLOW_OMP_PAUSE)
  detail::thread_count().store(1);
#endif
}

// Below this many multiply-adds a parallel region costs more than it saves.
#ifndef TDFLOW_PARALLEL_MIN_WORK
#define TDFLOW_PARALLEL_MIN_WORK 2.0e5
#endif
constexpr double kParallelMinWork = TDFLOW_PARALLEL_MIN_WORK;

// Runs body(b) for b in [0, n_blocks), in parallel when the work is large enough.
template <class Body>
void parallel_blocks(Eigen::Index n_blocks, double work, Body&& body) {
#ifdef _OPENMP
  // an `if(false)` parallel region still builds a team (about a microsecond): branch instead
  if (n_blocks > 1 && work >= kParallelMinWork && !omp_in_parallel()) {
    const int nt = max_threads();
    if (nt > 1) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
      for (Eigen::Index b = 0; b < n_blocks; ++b) body(b);
      return;
    }
  }
#endif
  (void)work;
  for (Eigen::Index b = 0; b < n_blocks; ++b) body(b);
}

}  // namespace tdflow
