// The process-wide OpenMP thread count (threads.hpp) and its behaviour across fork.
#include "pybind11.hpp"

#include <atomic>

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif

#include "tdflow/threads.hpp"

namespace tdflow::bindings {

void register_threads(py::module_& m) {
  m.attr("has_openmp") = has_openmp();
  set_max_threads(max_threads());  // the OpenMP default, now process-wide
#if defined(__unix__) || defined(__APPLE__)
  pthread_atfork(&before_fork, nullptr, &in_forked_child);  // forked children can use threads
#endif
  m.def("_team_size", [] {
    std::atomic<int> n{1};
    parallel_blocks(64, 1e12, [&](Eigen::Index) {
#ifdef _OPENMP
      int k = omp_get_num_threads(), cur = n.load();
      while (k > cur && !n.compare_exchange_weak(cur, k)) {}
#endif
    });
    return n.load();
  }, "Threads in the team of a large parallel loop started from the calling thread (for tests).");
  m.def("get_max_threads", &max_threads, "Number of OpenMP threads the core uses (process-wide).");
  m.def("set_max_threads", &set_max_threads, py::arg("n"),
        "Set the number of OpenMP threads for every thread of the process.");
}

}  // namespace tdflow::bindings
