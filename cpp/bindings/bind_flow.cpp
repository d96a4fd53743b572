// _core.GradientFlow: the deflation model's flow (flow.hpp), its evaluations and its runs, one
// or many replicas at a time.
#include "gradient_flow.hpp"

#include <atomic>
#include <cmath>
#include <condition_variable>
#include <mutex>

namespace tdflow::bindings {

namespace {

GradientFlow make_flow(py::handle U, py::handle a, int order, double lam, double active_tol,
                       const std::string& contraction) {
  check_order(order);
  FArray u = as_real_array(U, "U", 2);
  if (u.shape(0) < 1 || u.shape(1) < 1)
    throw py::value_error("U must have d >= 1 rows and r >= 1 columns, got " + shape_str(u));
  FArray av = as_real_array(a, "a", 1, u.shape(1));
  if (!std::isfinite(lam) || lam < 0) throw py::value_error("lam must be finite and >= 0");
  if (!std::isfinite(active_tol) || active_tol < 0)
    throw py::value_error("active_tol must be finite and >= 0");
  const Contraction c = contraction == "auto" ? Contraction::Auto
                        : contraction == "gram" ? Contraction::Gram
                        : contraction == "moment" ? Contraction::Moment
                        : throw py::value_error("contraction must be 'auto', 'gram' or 'moment', got '" + contraction + "'");
  return GradientFlow(Target(Mat(mat_of(u)), Vec(vec_of(av)), order), lam, active_tol, c);
}

// Scratch for evaluations called from Python: one workspace per thread, so that threads
// sharing this object never share scratch and repeated calls from one thread allocate nothing.
GradientFlow::Workspace& workspace() {
  thread_local GradientFlow::Workspace ws;
  return ws;
}

// Why a result overflowed: the size of the largest column, and how the result grows.
auto sizes(const FArray& w, const char* growth = "") {
  return [&w, growth] {
    return "largest column norm of W " + num(largest_column_norm(mat_of(w))) + growth;
  };
}

}  // namespace

void Records::observe(GradientFlowSystem& sys, const RunArgs& args, double t, const Mat& W) {
  ts.push_back(t);
  double rn2;
  sys.record(W, rn2, directional);
  rnorms.push_back(std::sqrt(rn2));
  losses.push_back(0.5 * rn2 + 0.5 * sys.flow().lam() * W.squaredNorm());
  dirs.insert(dirs.end(), directional.data(), directional.data() + directional.size());
  if (args.save_norms) {
    const Vec n = W.colwise().norm().transpose();
    norms.insert(norms.end(), n.data(), n.data() + n.size());
  }
  if (args.save_states) states.insert(states.end(), W.data(), W.data() + W.size());
}

py::dict Records::to_dict(const RunArgs& args, const Mat& W, py::ssize_t r,
                          py::object error) const {
  const py::ssize_t n = static_cast<py::ssize_t>(ts.size()), d = W.rows(), m = W.cols();
  py::dict out;
  out["t"] = py::array_t<double>(n, ts.data());
  out["loss"] = py::array_t<double>(n, losses.data());
  out["residual_norm"] = py::array_t<double>(n, rnorms.data());
  out["directional_residual"] = py::array_t<double>({n, r}, dirs.data());
  if (args.save_norms) out["norms"] = py::array_t<double>({n, m}, norms.data());
  if (args.save_states) {
    // each snapshot is column-major d x m, i.e. C-order m x d: transpose the last two axes
    py::array_t<double> s({n, m, d}, states.data());
    out["states"] = s.attr("transpose")(0, 2, 1);
  }
  out["W"] = W;
  put_outcome(out, outcome, std::move(error));
  return out;
}

PyGradientFlow::PyGradientFlow(py::handle U, py::handle a, int order, double lam,
                               double active_tol, const std::string& contraction)
    : flow(make_flow(U, a, order, lam, active_tol, contraction)) {}

Mat PyGradientFlow::rhs(py::handle W) {
  FArray w = view(W);
  return released(
      "the right-hand side",
      [&] {
        Mat dW;
        flow.rhs(mat_of(w), dW, workspace());
        return dW;
      },
      sizes(w, "; it grows like ||w||^3 and overflows from about 1e102"));
}

double PyGradientFlow::loss(py::handle W) {
  FArray w = view(W);
  return released(
      "the loss", [&] { return flow.loss(mat_of(w), workspace()); },
      sizes(w, "; it grows like ||w||^4 and overflows from about 1e77"));
}

double PyGradientFlow::residual_norm(py::handle W) {
  FArray w = view(W);
  return released(
      "||T - T*||_F", [&] { return std::sqrt(flow.residual_norm_squared(mat_of(w), workspace())); },
      sizes(w, "; ||T||_F^2 grows like ||w||^4 and overflows from about 1e77"));
}

Vec PyGradientFlow::directional_residual(py::handle W) {
  FArray w = view(W);
  return released(
      "the directional residual", [&] { return flow.directional_residual(mat_of(w), workspace()); },
      sizes(w));
}

py::dict PyGradientFlow::integrate(py::handle W0, double t0, py::handle t_eval,
                                   const std::string& method, double h, double rtol, double atol,
                                   double max_step, long max_steps, bool save_norms,
                                   bool save_states, std::optional<py::function> progress,
                                   double progress_interval) {
  Mat W = state(W0, "W0");
  const RunArgs args(t0, t_eval, method, h, rtol, atol, max_step, max_steps, save_norms, save_states);
  Records rec;
  Ticker ticker(std::move(progress), progress_interval);
  rec.outcome = run_released(ticker, [&](auto& tick, auto& poll) {
    GradientFlowSystem sys(flow);
    return tdflow::integrate(sys, args.method, W, args.t0, args.t_eval, args.opt,
                             [&](double t, const Mat& Wt) { rec.observe(sys, args, t, Wt); },
                             tick, poll);
  });
  return rec.to_dict(args, W, flow.target().rank(), ticker.error());
}

// Independent replicas (one d x m initial state each, W0s of shape (n, d, m)), run in parallel
// over replicas, each one serially: for problems too small to split one right-hand side.
// The calling thread also watches for Ctrl-C and reports progress (the number of finished
// replicas); a Python error stops every replica at its next step and the runs come back as
// they are, None for those never started. Returns (runs, error).
py::tuple PyGradientFlow::integrate_batch(py::handle W0s_obj, double t0, py::handle t_eval,
                                          const std::string& method, double h, double rtol,
                                          double atol, double max_step, long max_steps,
                                          bool save_norms, bool save_states,
                                          std::optional<py::function> progress,
                                          double progress_interval) {
  py::array W0s = py::array::ensure(W0s_obj);
  if (!W0s || W0s.ndim() != 3)
    throw py::value_error("W0s must be a 3-D array (replicas, d, m)");
  const py::ssize_t n = W0s.shape(0);
  std::vector<Mat> Ws;
  Ws.reserve(n);
  for (py::ssize_t i = 0; i < n; ++i) {
    // a replica of a C-ordered stack is a row-major d x m view: copied once, into its state
    const CArray w = view<CArray>(W0s[py::int_(i)], "W0s[i]");
    Ws.emplace_back(Eigen::Map<const RowMat>(w.data(), w.shape(0), w.shape(1)));
  }
  const RunArgs args(t0, t_eval, method, h, rtol, atol, max_step, max_steps, save_norms, save_states);
  std::vector<Records> recs(n);
  std::vector<char> started(n, 0);
  Ticker ticker(std::move(progress), progress_interval);
  std::atomic<py::ssize_t> next{0}, finished{0};
  std::atomic<bool> stop{false};
  std::mutex mutex;
  std::condition_variable all_done;
  // the calling thread checks signals and reports progress; every thread obeys `stop`
  auto check = [&](bool caller) {
    if (caller && ticker(static_cast<double>(finished.load()))) stop = true;
    return stop.load(std::memory_order_relaxed);
  };
  auto worker = [&](bool caller) {
    for (py::ssize_t i; (i = next.fetch_add(1)) < n;) {
      if (!stop.load()) {
        started[i] = 1;
        try {
          GradientFlowSystem sys(flow);  // own workspace per replica
          recs[i].outcome = tdflow::integrate(
              sys, args.method, Ws[i], args.t0, args.t_eval, args.opt,
              [&](double t, const Mat& Wt) { recs[i].observe(sys, args, t, Wt); },
              [&](double) { return check(caller); }, [&]() { return check(caller); });
        } catch (const std::exception& e) {
          recs[i].error = e.what();
          recs[i].outcome.status = Status::Stopped;
        }
      }
      if (finished.fetch_add(1) + 1 == n) {
        std::lock_guard<std::mutex> lock(mutex);
        all_done.notify_all();
      }
    }
    if (!caller) return;
    std::unique_lock<std::mutex> lock(mutex);  // the others' last replicas
    while (finished.load() < n) {
      all_done.wait_for(lock, std::chrono::milliseconds(20));
      lock.unlock();
      check(true);
      lock.lock();
    }
  };
  {
    py::gil_scoped_release release;
    const int nt = n > 1 ? static_cast<int>(std::min<py::ssize_t>(max_threads(), n)) : 1;
#ifdef _OPENMP
    if (nt > 1) {
#pragma omp parallel num_threads(nt)
      worker(omp_get_thread_num() == 0);
    } else {
      worker(true);
    }
#else
    worker(true);
#endif
  }
  if (!stop.load()) ticker.call(static_cast<double>(n));  // final update
  py::list out;
  for (py::ssize_t i = 0; i < n; ++i) {
    if (!recs[i].error.empty()) throw std::runtime_error("replica " + std::to_string(i) + ": " + recs[i].error);
    if (!started[i]) {
      out.append(py::none());
      continue;
    }
    out.append(recs[i].to_dict(args, Ws[i], flow.target().rank(), py::none()));
  }
  return py::make_tuple(out, ticker.error());
}

void register_flow(py::module_& m) {
  // the constants of flow.hpp that the torch backend (torch_kernels.py) must share
  m.attr("ACTIVE_SET_MIN_EXP") = ActiveSet::kMinExp;
  m.attr("ACTIVE_SET_BUCKETS") = ActiveSet::kBuckets;
  m.attr("UNDERFLOW_NORM") = kUnderflowNorm;
  py::class_<PyGradientFlow>(m, "GradientFlow")
      .def(py::init<py::handle, py::handle, int, double, double, const std::string&>(), py::arg("U"),
           py::arg("a"), py::arg("order"), py::arg("lam"), py::arg("active_tol") = 0.0,
           py::arg("contraction") = "auto")
      .def_property_readonly("last_contraction", [](const PyGradientFlow& f) {
            return f.flow.last_contraction() == Contraction::Moment ? "moment" : "gram"; },
          "path of the last evaluation ('gram' or 'moment')")
      .def_property_readonly("active_tol", [](const PyGradientFlow& f) { return f.flow.active_tol(); })
      .def_property_readonly("n_active", [](const PyGradientFlow& f) { return f.flow.n_active(); },
                             "columns in the residual at the last evaluation")
      .def_property_readonly("order", [](const PyGradientFlow& f) { return f.flow.order(); })
      .def_property_readonly("lam", [](const PyGradientFlow& f) { return f.flow.lam(); })
      .def_property_readonly("basis_target",
                             [](const PyGradientFlow& f) { return f.flow.target().basis; })
      .def("rhs", &PyGradientFlow::rhs, py::arg("W"))
      .def("loss", &PyGradientFlow::loss, py::arg("W"))
      .def("residual_norm", &PyGradientFlow::residual_norm, py::arg("W"))
      .def("directional_residual", &PyGradientFlow::directional_residual, py::arg("W"))
      .def("integrate", &PyGradientFlow::integrate, py::arg("W0"), py::arg("t0"),
           py::arg("t_eval"), py::arg("method"), py::arg("h"), py::arg("rtol"), py::arg("atol"),
           py::arg("max_step"), py::arg("max_steps"), py::arg("save_norms"),
           py::arg("save_states"), py::arg("progress"), py::arg("progress_interval"))
      .def("integrate_batch", &PyGradientFlow::integrate_batch, py::arg("W0s"), py::arg("t0"),
           py::arg("t_eval"), py::arg("method"), py::arg("h"), py::arg("rtol"), py::arg("atol"),
           py::arg("max_step"), py::arg("max_steps"), py::arg("save_norms"), py::arg("save_states"),
           py::arg("progress"), py::arg("progress_interval"));
}

}  // namespace tdflow::bindings
