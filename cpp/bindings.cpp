// The only pybind11 file: validates every input, releases the GIL, calls the header-only core.
// Arrays are float64 and column-major (Fortran order); such arrays are used without a copy.
#include <pybind11/eigen.h>
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif

#include "tdflow/cp_tensor.hpp"
#include "tdflow/flow.hpp"
#include "tdflow/integrate.hpp"
#include "tdflow/events.hpp"
#include "tdflow/threads.hpp"
#include "tdflow/linear.hpp"

namespace py = pybind11;
using namespace tdflow;

namespace {

using FArray = py::array_t<double, py::array::f_style | py::array::forcecast>;

std::string shape_str(const py::array& a) {
  std::ostringstream s;
  s << "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.shape(i);
  s << (a.ndim() == 1 ? ",)" : ")");
  return s.str();
}

// A real float64 Fortran-ordered view of `obj`; TypeError for non-numeric data, ValueError for a
// wrong number of dimensions, a wrong extent (-1: any) or a non-finite entry.
FArray as_real_array(py::handle obj, const char* name, int ndim, py::ssize_t rows = -1,
                     py::ssize_t cols = -1) {
  py::array arr = py::array::ensure(obj);
  if (!arr) throw py::type_error(std::string(name) + " must be an array of real numbers");
  const char kind = arr.dtype().kind();
  if (kind != 'f' && kind != 'i' && kind != 'u' && kind != 'b')
    throw py::type_error(std::string(name) + " must hold real numbers, got dtype " +
                         std::string(py::str(arr.dtype())));
  if (arr.ndim() != ndim)
    throw py::value_error(std::string(name) + " must be " + std::to_string(ndim) +
                          "-D, got shape " + shape_str(arr));
  if ((rows >= 0 && arr.shape(0) != rows) || (ndim == 2 && cols >= 0 && arr.shape(1) != cols)) {
    std::ostringstream s;
    s << name << " must have shape (" << (rows >= 0 ? std::to_string(rows) : "*");
    if (ndim == 2) s << ", " << (cols >= 0 ? std::to_string(cols) : "*");
    s << (ndim == 1 ? ",)" : ")") << ", got " << shape_str(arr);
    throw py::value_error(s.str());
  }
  FArray f = FArray::ensure(arr);
  const double* p = f.data();
  for (py::ssize_t i = 0; i < f.size(); ++i)
    if (!std::isfinite(p[i]))
      throw py::value_error(std::string(name) + " contains NaN or Inf");
  return f;
}

std::string num(double x) {
  std::ostringstream s;
  s.precision(3);
  s << x;
  return s.str();
}

double largest_column_norm(const Eigen::Ref<const Mat>& X) {
  double n = 0.0;
  for (Index j = 0; j < X.cols(); ++j) n = std::max(n, X.col(j).stableNorm());
  return n;
}

// A result that overflowed double precision (finite inputs, Inf/NaN out) is refused with the
// sizes that caused it (sizes(): only computed then), never handed back as Inf/NaN.
template <class Sizes>
void require_finite(bool finite, const char* what, Sizes&& sizes) {
  if (!finite) throw py::value_error(std::string(what) + " overflows double precision (" + sizes() + ")");
}

MatMap mat_of(const FArray& a) {
  return MatMap(a.data(), a.shape(0), a.ndim() == 2 ? a.shape(1) : 1);
}
VecMap vec_of(const FArray& a) { return VecMap(a.data(), a.shape(0)); }

int check_order(int order) {
  if (order < 3) throw py::value_error("order must be >= 3, got " + std::to_string(order));
  return order;
}

// Components Z (d x k) and coefficients c (k) of one CP tensor.
struct CPArgs {
  FArray Z, c;
  CPArgs(py::handle Zo, py::handle co, const char* zname, const char* cname)
      : Z(as_real_array(Zo, zname, 2)), c(as_real_array(co, cname, 1, Z.shape(1))) {
    if (Z.shape(0) < 1) throw py::value_error(std::string(zname) + " must have d >= 1 rows");
  }
  Parts parts() const { return {Part(Z.data(), Z.shape(0), Z.shape(1), c.data())}; }
  py::ssize_t dim() const { return Z.shape(0); }

  // the sizes that make a contraction overflow
  std::string sizes(const char* vname, const FArray& v) const {
    return "largest |c_j| " + num(vec_of(c).cwiseAbs().maxCoeff()) + ", largest column norm of Z " +
           num(largest_column_norm(mat_of(Z))) + ", of " + vname + " " +
           num(largest_column_norm(mat_of(v)));
  }
};

Mat contract_py(py::handle Z, py::handle c, py::handle V, int order) {
  check_order(order);
  CPArgs t(Z, c, "Z", "c");
  FArray v = as_real_array(V, "V", 2, t.dim());
  Mat out;
  {
    py::gil_scoped_release release;
    contract(t.parts(), mat_of(v), order - 1, out);
  }
  require_finite(out.allFinite(), "T(v^{l-1}, I)", [&] { return t.sizes("V", v); });
  return out;
}

Mat contract_mixed_py(py::handle Z, py::handle c, py::handle V, py::handle U, int order) {
  check_order(order);
  CPArgs t(Z, c, "Z", "c");
  FArray v = as_real_array(V, "V", 2, t.dim());
  FArray u = as_real_array(U, "U", 2, t.dim(), v.shape(1));
  Mat out;
  {
    py::gil_scoped_release release;
    contract_mixed(t.parts(), mat_of(v), mat_of(u), order - 2, out);
  }
  require_finite(out.allFinite(), "T(v^{l-2}, u, I)", [&] {
    return t.sizes("V", v) + ", of U " + num(largest_column_norm(mat_of(u)));
  });
  return out;
}

Vec evaluate_py(py::handle Z, py::handle c, py::handle V, int order) {
  check_order(order);
  CPArgs t(Z, c, "Z", "c");
  FArray v = as_real_array(V, "V", 2, t.dim());
  Vec out;
  {
    py::gil_scoped_release release;
    evaluate(t.parts(), mat_of(v), order, out);
  }
  require_finite(out.allFinite(), "T(v^l)", [&] { return t.sizes("V", v); });
  return out;
}

double inner_py(py::handle Z1, py::handle c1, py::handle Z2, py::handle c2, int order) {
  check_order(order);
  CPArgs a(Z1, c1, "Z1", "c1"), b(Z2, c2, "Z2", "c2");
  if (a.dim() != b.dim())
    throw py::value_error("Z1 and Z2 must have the same number of rows d");
  double v;
  {
    py::gil_scoped_release release;
    v = inner(a.parts(), b.parts(), order);
  }
  require_finite(std::isfinite(v), "<T1, T2>", [&] { return a.sizes("Z2", b.Z); });
  return v;
}

double norm_squared_py(py::handle Z, py::handle c, int order) {
  check_order(order);
  CPArgs t(Z, c, "Z", "c");
  double v;
  {
    py::gil_scoped_release release;
    v = norm_squared(t.parts(), order);
  }
  require_finite(std::isfinite(v), "||T||_F^2", [&] { return t.sizes("Z", t.Z); });
  return v;
}

// Calls back into Python from a run that holds no GIL: checks for Ctrl-C at most every
// kSignalInterval seconds (also from poll(), on rejected steps) and runs the progress callback
// at most every `interval` seconds. Any Python error stops the run and is handed back with the
// partial result. Used by one thread at a time.
class Ticker {
 public:
  static constexpr double kSignalInterval = 0.1;
  Ticker(std::optional<py::function> cb, double interval)
      : cb_(std::move(cb)), interval_(interval), check_every_(std::min(interval, kSignalInterval)) {
    last_check_ = last_report_ = std::chrono::steady_clock::now();
  }
  // after an accepted step at time t (or, for a batch, with the number of finished runs)
  bool operator()(double t) { return due(true, t); }
  // after a rejected step: signals only
  bool poll() { return due(false, 0.0); }
  bool call(double t, bool report = true) {
    py::gil_scoped_acquire gil;
    try {
      if (PyErr_CheckSignals() != 0) throw py::error_already_set();
      if (report && cb_) (*cb_)(t);
    } catch (py::error_already_set& e) {
      error_ = py::reinterpret_borrow<py::object>(e.value());
      return true;
    }
    return false;
  }
  py::object error() const { return error_; }

 private:
  bool due(bool progress, double t) {
    const auto now = std::chrono::steady_clock::now();
    if (std::chrono::duration<double>(now - last_check_).count() < check_every_) return false;
    last_check_ = now;
    const bool report =
        progress && std::chrono::duration<double>(now - last_report_).count() >= interval_;
    if (report) last_report_ = now;
    return call(t, report);
  }

  std::optional<py::function> cb_;
  double interval_, check_every_;
  std::chrono::steady_clock::time_point last_check_, last_report_;
  py::object error_ = py::none();
};

Method parse_method(const std::string& name) {
  if (name == "euler") return Method::Euler;
  if (name == "rk4") return Method::RK4;
  if (name == "dopri5") return Method::Dopri5;
  if (name == "dop853") return Method::Dop853;
  throw py::value_error("method must be 'euler', 'rk4', 'dopri5' or 'dop853', got '" + name + "'");
}

const char* status_name(Status s) {
  switch (s) {
    case Status::Finished: return "finished";
    case Status::NonFinite: return "non-finite";
    case Status::Stopped: return "stopped";
    case Status::MaxSteps: return "max-steps";
    case Status::StepTooSmall: return "step-too-small";
  }
  return "unknown";
}

// How a run ended, in the result dict of every integrate entry point.
void put_outcome(py::dict& out, const Outcome& o) {
  out["status"] = status_name(o.status);
  out["t_final"] = o.t;
  out["n_steps"] = o.n_steps;
  out["n_rhs"] = o.n_rhs;
  out["n_rejected"] = o.n_rejected;
  out["h_last"] = o.h;
}

// Validated stepping options and recording times, shared by every integrate entry point.
struct StepArgs {
  Method method;
  double t0;
  std::vector<double> t_eval;
  StepOptions opt;

  StepArgs(double t0_, py::handle t_eval_obj, const std::string& method_name, double h,
           double rtol, double atol, double max_step, long max_steps)
      : method(parse_method(method_name)), t0(t0_) {
    FArray te = as_real_array(t_eval_obj, "t_eval", 1);
    t_eval.assign(te.data(), te.data() + te.shape(0));
    if (!std::isfinite(t0)) throw py::value_error("t0 must be finite");
    if (t_eval.empty()) throw py::value_error("t_eval must not be empty");
    for (size_t i = 0; i < t_eval.size(); ++i) {
      if (t_eval[i] < t0) throw py::value_error("t_eval must not start before t0");
      if (i && t_eval[i] < t_eval[i - 1]) throw py::value_error("t_eval must be non-decreasing");
    }
    if (!is_adaptive(method) && !(h > 0 && std::isfinite(h)))
      throw py::value_error("h must be finite and > 0 for a fixed-step method");
    if (!is_adaptive(method)) detail::check_step_count(h, t0, t_eval.back());
    if (is_adaptive(method) && (!(rtol >= 0 && atol >= 0) || !(rtol > 0 || atol > 0)))
      throw py::value_error("rtol and atol must be >= 0 and not both 0");
    if (!(max_step > 0)) throw py::value_error("max_step must be > 0");
    if (max_steps < 0) throw py::value_error("max_steps must be >= 0");
    opt.h = is_adaptive(method) ? (std::isfinite(h) ? h : 0.0) : h;
    opt.rtol = rtol;
    opt.atol = atol;
    opt.max_step = max_step;
    opt.max_steps = max_steps;
  }
};

// What the deflation flow records besides the loss and residuals.
struct RunArgs : StepArgs {
  bool save_norms, save_states;
  RunArgs(double t0_, py::handle t_eval_obj, const std::string& method_name, double h,
          double rtol, double atol, double max_step, long max_steps, bool norms, bool states)
      : StepArgs(t0_, t_eval_obj, method_name, h, rtol, atol, max_step, max_steps),
        save_norms(norms), save_states(states) {}
};

// What one run records at each requested time (filled without the GIL).
struct Records {
  std::vector<double> ts, losses, rnorms, dirs, norms, states;
  Outcome outcome;
  std::string error;  // a C++ exception from a batch member

  void observe(GradientFlowSystem& sys, const RunArgs& args, double t, const Mat& W) {
    ts.push_back(t);
    const double rn2 = sys.residual_norm_squared(W);
    rnorms.push_back(std::sqrt(rn2));
    losses.push_back(0.5 * rn2 + 0.5 * sys.flow().lam() * W.squaredNorm());
    const Vec dr = sys.directional_residual(W);
    dirs.insert(dirs.end(), dr.data(), dr.data() + dr.size());
    if (args.save_norms) {
      const Vec n = W.colwise().norm().transpose();
      norms.insert(norms.end(), n.data(), n.data() + n.size());
    }
    if (args.save_states) states.insert(states.end(), W.data(), W.data() + W.size());
  }

  py::dict to_dict(const RunArgs& args, const Mat& W, py::ssize_t r) const {
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
    put_outcome(out, outcome);
    return out;
  }
};

struct PyGradientFlow {
  GradientFlow flow;

  static GradientFlow make(py::handle U, py::handle a, int order, double lam, double active_tol,
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

  PyGradientFlow(py::handle U, py::handle a, int order, double lam, double active_tol,
                  const std::string& contraction)
      : flow(make(U, a, order, lam, active_tol, contraction)) {}


  // A validated view of W (no copy when it is float64 and Fortran-ordered).
  FArray view(py::handle W, const char* name = "W") const {
    FArray w = as_real_array(W, name, 2, flow.dim());
    if (w.shape(1) < 1) throw py::value_error(std::string(name) + " must have m >= 1 columns");
    return w;
  }

  Mat state(py::handle W, const char* name = "W") const { return Mat(mat_of(view(W, name))); }

  // Scratch for evaluations called from Python: one workspace per thread, so that threads
  // sharing this object never share scratch and repeated calls from one thread allocate nothing.
  static GradientFlow::Workspace& workspace() {
    thread_local GradientFlow::Workspace ws;
    return ws;
  }

  // Why a result overflowed: the size of the largest column, and how the result grows.
  static auto sizes(const FArray& w, const char* growth = "") {
    return [&w, growth] {
      return "largest column norm of W " + num(largest_column_norm(mat_of(w))) + growth;
    };
  }

  Mat rhs(py::handle W) {
    FArray w = view(W);
    Mat dW;
    {
      py::gil_scoped_release release;
      flow.rhs(mat_of(w), dW, workspace());
    }
    require_finite(dW.allFinite(), "the right-hand side",
                   sizes(w, "; it grows like ||w||^3 and overflows from about 1e102"));
    return dW;
  }
  double loss(py::handle W) {
    FArray w = view(W);
    double v;
    {
      py::gil_scoped_release release;
      v = flow.loss(mat_of(w), workspace());
    }
    require_finite(std::isfinite(v), "the loss",
                   sizes(w, "; it grows like ||w||^4 and overflows from about 1e77"));
    return v;
  }
  double residual_norm(py::handle W) {
    FArray w = view(W);
    double v;
    {
      py::gil_scoped_release release;
      v = std::sqrt(flow.residual_norm_squared(mat_of(w), workspace()));
    }
    require_finite(std::isfinite(v), "||T - T*||_F",
                   sizes(w, "; ||T||_F^2 grows like ||w||^4 and overflows from about 1e77"));
    return v;
  }
  Vec directional_residual(py::handle W) {
    FArray w = view(W);
    Vec v;
    {
      py::gil_scoped_release release;
      v = flow.directional_residual(mat_of(w), workspace());
    }
    require_finite(v.allFinite(), "the directional residual", sizes(w));
    return v;
  }

  py::dict integrate(py::handle W0, double t0, py::handle t_eval, const std::string& method,
                     double h, double rtol, double atol, double max_step, long max_steps,
                     bool save_norms, bool save_states, std::optional<py::function> progress,
                     double progress_interval) {
    Mat W = state(W0, "W0");
    const RunArgs args(t0, t_eval, method, h, rtol, atol, max_step, max_steps, save_norms, save_states);
    Records rec;
    Ticker ticker(std::move(progress), progress_interval);
    {
      py::gil_scoped_release release;
      GradientFlowSystem sys(flow);
      rec.outcome = tdflow::integrate(
          sys, args.method, W, args.t0, args.t_eval, args.opt,
          [&](double t, const Mat& Wt) { rec.observe(sys, args, t, Wt); },
          [&](double t) { return ticker(t); }, [&]() { return ticker.poll(); });
    }
    if (rec.outcome.status == Status::Finished) ticker.call(rec.outcome.t);  // final update
    py::dict out = rec.to_dict(args, W, flow.target().rank());
    out["error"] = ticker.error();
    return out;
  }

  // Independent replicas (one d x m initial state each, W0s of shape (n, d, m)), run in parallel
  // over replicas, each one serially: for problems too small to split one right-hand side.
  // The calling thread also watches for Ctrl-C and reports progress (the number of finished
  // replicas); a Python error stops every replica at its next step and the runs come back as
  // they are, None for those never started. Returns (runs, error).
  py::tuple integrate_batch(py::handle W0s_obj, double t0, py::handle t_eval,
                            const std::string& method, double h, double rtol, double atol,
                            double max_step, long max_steps, bool save_norms, bool save_states,
                            std::optional<py::function> progress, double progress_interval) {
    py::array W0s = py::array::ensure(W0s_obj);
    if (!W0s || W0s.ndim() != 3)
      throw py::value_error("W0s must be a 3-D array (replicas, d, m)");
    const py::ssize_t n = W0s.shape(0);
    std::vector<Mat> Ws;
    Ws.reserve(n);
    for (py::ssize_t i = 0; i < n; ++i) Ws.push_back(state(W0s[py::int_(i)], "W0s[i]"));
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
      py::dict dct = recs[i].to_dict(args, Ws[i], flow.target().rank());
      dct["error"] = py::none();
      out.append(dct);
    }
    return py::make_tuple(out, ticker.error());
  }
};

// Deep linear model f(W_1 ... W_L): the packed state is P x L, one column per layer (linear.hpp).
struct PyDeepLinearFlow {
  DeepLinearFlow flow;

  static DeepLinearFlow make(const std::vector<long>& dims_in, py::handle Y, py::handle X) {
    if (dims_in.size() < 2)
      throw py::value_error("dims must hold n_0, ..., n_L with L >= 1 layers");
    std::vector<Index> dims;
    for (long n : dims_in) {
      if (n < 1) throw py::value_error("every entry of dims must be >= 1");
      dims.push_back(static_cast<Index>(n));
    }
    const bool regression = !X.is_none();
    if (regression) {
      FArray x = as_real_array(X, "X", 2, -1, dims.front());
      FArray y = as_real_array(Y, "Y", 2, x.shape(0), dims.back());
      return DeepLinearFlow(dims, Mat(mat_of(y)), Mat(mat_of(x)), true);
    }
    FArray y = as_real_array(Y, "Y", 2, dims.front(), dims.back());
    return DeepLinearFlow(dims, Mat(mat_of(y)), Mat(), false);
  }

  PyDeepLinearFlow(const std::vector<long>& dims, py::handle Y, py::handle X)
      : flow(make(dims, Y, X)) {}

  Mat state(py::handle theta, const char* name = "theta") const {
    FArray t = as_real_array(theta, name, 2, flow.rows(), flow.depth());
    return Mat(mat_of(t));
  }

  Mat rhs(py::handle theta) {
    Mat th = state(theta), d;
    {
      py::gil_scoped_release release;
      flow.rhs(th, d);
    }
    require_finite(d.allFinite(), "the right-hand side",
                   [&] { return "largest layer norm " + num(largest_column_norm(th)); });
    return d;
  }

  py::dict integrate(py::handle theta0, double t0, py::handle t_eval_obj,
                     const std::string& method_name, double h, double rtol, double atol,
                     double max_step, long max_steps, bool save_products, bool save_imbalances,
                     bool save_states, std::optional<py::function> progress,
                     double progress_interval) {
    Mat theta = state(theta0, "theta0");
    const StepArgs args(t0, t_eval_obj, method_name, h, rtol, atol, max_step, max_steps);

    const Index L = flow.depth(), n0 = flow.dims().front(), nL = flow.dims().back();
    Index n_imb = 0;
    for (Index l = 1; l < L; ++l) n_imb += flow.dims()[l] * flow.dims()[l];
    std::vector<double> ts, losses, gaps, gn2, products, imbs, states;
    Mat dth;
    auto observe = [&](double t, const Mat& th) {
      ts.push_back(t);
      const Mat W = flow.product(th);
      losses.push_back(flow.f(W));
      gaps.push_back(flow.gap(W));
      flow.rhs(th, dth);
      gn2.push_back(dth.squaredNorm());  // -dL/dt = ||grad L||^2
      if (save_products) products.insert(products.end(), W.data(), W.data() + n0 * nL);
      if (save_imbalances)
        for (Index l = 1; l < L; ++l) {
          const Mat D = flow.imbalance(th, l);
          imbs.insert(imbs.end(), D.data(), D.data() + D.size());
        }
      if (save_states) states.insert(states.end(), th.data(), th.data() + th.size());
    };
    Ticker ticker(std::move(progress), progress_interval);
    Outcome res;
    {
      py::gil_scoped_release release;
      res = tdflow::integrate(flow, args.method, theta, args.t0, args.t_eval, args.opt, observe,
                              [&](double t) { return ticker(t); }, [&]() { return ticker.poll(); });
    }
    if (res.status == Status::Finished) ticker.call(res.t);

    const py::ssize_t n = static_cast<py::ssize_t>(ts.size());
    py::dict out;
    out["t"] = py::array_t<double>(n, ts.data());
    out["loss"] = py::array_t<double>(n, losses.data());
    out["gap"] = py::array_t<double>(n, gaps.data());
    out["grad_norm_sq"] = py::array_t<double>(n, gn2.data());
    if (save_products) {
      // each snapshot column-major: (n, nL, n0) in C order, transposed to (n, n0, nL)
      py::array_t<double> p({n, static_cast<py::ssize_t>(nL), static_cast<py::ssize_t>(n0)},
                            products.data());
      out["products"] = p.attr("transpose")(0, 2, 1);
    }
    if (save_imbalances)
      out["imbalances"] = py::array_t<double>({n, static_cast<py::ssize_t>(n_imb)}, imbs.data());
    if (save_states) {
      py::array_t<double> s({n, static_cast<py::ssize_t>(L), static_cast<py::ssize_t>(flow.rows())},
                            states.data());
      out["states"] = s.attr("transpose")(0, 2, 1);
    }
    out["theta"] = theta;
    put_outcome(out, res);
    out["error"] = ticker.error();
    return out;
  }
};

// GradientFlow.integrate plus Definition 1 and Proposition 1 of events.hpp on every accepted step
// (Proposition 1 also on the initial state). `member` (m integers) holds the direction whose S_i
// holds each column (-1: S_empty); epoch, beta and gamma set Proposition 1's thresholds. The
// result adds the crossings of delta1 (joins among them), the membership after the run and the
// worst margin of each condition of Proposition 1 with its time.
py::dict integrate_joins_py(PyGradientFlow& self, py::handle W0, double t0, py::handle t_eval,
                            const std::string& method, double h, double rtol, double atol,
                            double max_step, long max_steps, bool save_norms, bool save_states,
                            py::handle member_obj, double delta1, double alpha, long epoch,
                            double beta, double gamma, std::optional<py::function> progress,
                            double progress_interval) {
  Mat W = self.state(W0, "W0");
  const RunArgs args(t0, t_eval, method, h, rtol, atol, max_step, max_steps, save_norms, save_states);
  FArray member_arr = as_real_array(member_obj, "member", 1, W.cols());
  if (!(delta1 > 0) || !std::isfinite(delta1)) throw py::value_error("delta1 must be finite and > 0");
  if (!(alpha > 0 && alpha < 1)) throw py::value_error("alpha must lie in (0, 1)");
  if (epoch < 0) throw py::value_error("epoch must be >= 0");
  if (!(beta > 0) || !std::isfinite(beta)) throw py::value_error("beta must be finite and > 0");
  if (!(gamma >= 0 && gamma < 1)) throw py::value_error("gamma must lie in [0, 1)");
  const Target& target = self.flow.target();
  std::vector<Index> member(W.cols());
  for (Index k = 0; k < W.cols(); ++k) {
    const double v = member_arr.data()[k];
    if (!(v == std::floor(v)) || v < -1 || v >= static_cast<double>(target.rank()))
      throw py::value_error("member entries must be -1 or a direction index < r");
    member[k] = static_cast<Index>(v);
  }
  const double m = static_cast<double>(W.cols());
  const Prop1Params params{delta1, alpha, self.flow.lam(),
                           static_cast<double>(epoch) * m * delta1 * delta1, beta / (1.0 - gamma)};
  Records rec;
  Ticker ticker(std::move(progress), progress_interval);
  DeflationWatch watch(target.U, target.basis, target.a, params, std::move(member), W, args.t0);
  {
    py::gil_scoped_release release;
    auto base_tick = [&](double t) { return ticker(t); };
    GradientFlowSystem sys(self.flow);
    WatchedTick<DeflationWatch, decltype(base_tick)> tick{watch, base_tick};
    rec.outcome = tdflow::integrate(
        sys, args.method, W, args.t0, args.t_eval, args.opt,
        [&](double t, const Mat& Wt) { rec.observe(sys, args, t, Wt); }, tick,
        [&]() { return ticker.poll(); });
  }
  if (rec.outcome.status == Status::Finished) ticker.call(rec.outcome.t);
  py::dict out = rec.to_dict(args, W, target.rank());
  out["error"] = ticker.error();
  const auto& ev = watch.crossings();
  const py::ssize_t n = static_cast<py::ssize_t>(ev.size());
  py::array_t<long long> cols(n), dirs(n);
  py::array_t<double> times(n), norms(n), mis(n);
  py::array_t<bool> up(n), joined(n);
  for (py::ssize_t i = 0; i < n; ++i) {
    cols.mutable_at(i) = ev[i].column;
    dirs.mutable_at(i) = ev[i].direction;
    times.mutable_at(i) = ev[i].t;
    norms.mutable_at(i) = ev[i].norm;
    mis.mutable_at(i) = ev[i].misalignment;
    up.mutable_at(i) = ev[i].upward;
    joined.mutable_at(i) = ev[i].joined;
  }
  out["crossing_column"] = cols;
  out["crossing_direction"] = dirs;
  out["crossing_t"] = times;
  out["crossing_norm"] = norms;
  out["crossing_misalignment"] = mis;
  out["crossing_upward"] = up;
  out["crossing_joined"] = joined;
  py::array_t<long long> member_out(W.cols());
  for (Index k = 0; k < W.cols(); ++k) member_out.mutable_at(k) = watch.member()[k];
  out["member"] = member_out;
  const char* names[Prop1Margins::kConditions] = {"a", "b", "c_lower", "c_upper", "d"};
  py::dict margin, margin_t;
  for (int c = 0; c < Prop1Margins::kConditions; ++c) {
    margin[names[c]] = watch.margins().margin[c];
    margin_t[names[c]] = watch.margins().time[c];
  }
  out["prop1_margin"] = margin;
  out["prop1_t"] = margin_t;
  out["n_checks"] = watch.checks();
  return out;
}

}  // namespace

// The adaptive methods' coefficients (integrate.hpp), so that the torch steppers use the very
// same numbers rather than a second copy.
py::dict tableau(const std::string& name) {
  auto row = [](const double* x, int n) { return std::vector<double>(x, x + n); };
  py::dict out;
  if (name == "dopri5") {
    using D = detail::DP5;
    out["A"] = std::vector<std::vector<double>>{
        {}, {D::a21}, {D::a31, D::a32}, {D::a41, D::a42, D::a43},
        {D::a51, D::a52, D::a53, D::a54}, {D::a61, D::a62, D::a63, D::a64, D::a65}};
    out["b"] = std::vector<double>{D::b1, 0.0, D::b3, D::b4, D::b5, D::b6};
    out["e"] = std::vector<double>{D::e1, 0.0, D::e3, D::e4, D::e5, D::e6, D::e7};
    std::vector<std::vector<double>> P;
    for (const auto& r : D::P) P.push_back(row(r, 4));
    out["P"] = P;
  } else if (name == "dop853") {
    using D = detail::DOP853;
    std::vector<std::vector<double>> A, Dm;
    for (int s = 0; s < 16; ++s) A.push_back(row(D::A[s], s));
    for (const auto& r : D::D) Dm.push_back(row(r, 16));
    out["A"] = A;
    out["C"] = row(D::C, 16);
    out["E3"] = row(D::E3, 12);
    out["E5"] = row(D::E5, 12);
    out["D"] = Dm;
  } else {
    throw py::value_error("no tableau for '" + name + "' (adaptive methods: dopri5, dop853)");
  }
  return out;
}

PYBIND11_MODULE(_core, mod) {
  mod.doc() = "tdflow's compiled core (private): CP contractions, gradient-flow RHS, steppers";
#ifdef VERSION_INFO
#define TDFLOW_STR2(x) #x
#define TDFLOW_STR(x) TDFLOW_STR2(x)
  mod.attr("__version__") = TDFLOW_STR(VERSION_INFO);
#endif
  mod.attr("has_openmp") = has_openmp();
  set_max_threads(max_threads());  // the OpenMP default, now process-wide
#if defined(__unix__) || defined(__APPLE__)
  pthread_atfork(&before_fork, nullptr, &in_forked_child);  // forked children can use threads
#endif
  mod.def("_pair_rounds", &detail::pair_rounds, py::arg("n_blocks"),
          "The round-robin schedule of contract_self_add (for tests).");
  mod.def("_self_block", &detail::self_block, py::arg("k"),
          "Block edge contract_self_add uses for k columns (for tests).");
  mod.def("_team_size", [] {
    std::atomic<int> n{1};
    parallel_blocks(64, 1e12, [&](Index) {
#ifdef _OPENMP
      int k = omp_get_num_threads(), cur = n.load();
      while (k > cur && !n.compare_exchange_weak(cur, k)) {}
#endif
    });
    return n.load();
  }, "Threads in the team of a large parallel loop started from the calling thread (for tests).");
  mod.def("tableau", &tableau, py::arg("method"),
          "Coefficients of an adaptive method ('dopri5' or 'dop853') as lists of floats.");
  mod.def("get_max_threads", &max_threads, "Number of OpenMP threads the core uses (process-wide).");
  mod.def("set_max_threads", &set_max_threads, py::arg("n"),
          "Set the number of OpenMP threads for every thread of the process.");

  mod.def("contract", &contract_py, py::arg("Z"), py::arg("c"), py::arg("V"), py::arg("order"),
          "T(v^{l-1}, I) for every column v of V, T = sum_j c_j z_j^{(x)l}. Returns d x m.");
  mod.def("contract_mixed", &contract_mixed_py, py::arg("Z"), py::arg("c"), py::arg("V"),
          py::arg("U"), py::arg("order"),
          "T(v^{l-2}, u, I) for paired columns v of V and u of U. Returns d x m.");
  mod.def("evaluate", &evaluate_py, py::arg("Z"), py::arg("c"), py::arg("V"), py::arg("order"),
          "T(v^l) for every column v of V. Returns (m,).");
  mod.def("inner", &inner_py, py::arg("Z1"), py::arg("c1"), py::arg("Z2"), py::arg("c2"),
          py::arg("order"), "<T1, T2> = sum c1_i c2_j <z1_i, z2_j>^l.");
  mod.def("norm_squared", &norm_squared_py, py::arg("Z"), py::arg("c"), py::arg("order"),
          "||T||_F^2 from the upper triangle of the Gram matrix, clamped at 0.");

  py::class_<PyGradientFlow>(mod, "GradientFlow")
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

  py::class_<PyDeepLinearFlow>(mod, "DeepLinearFlow")
      .def(py::init<const std::vector<long>&, py::handle, py::handle>(), py::arg("dims"),
           py::arg("Y"), py::arg("X"))
      .def_property_readonly("rows", [](const PyDeepLinearFlow& f) { return f.flow.rows(); })
      .def_property_readonly("W_star", [](const PyDeepLinearFlow& f) { return f.flow.W_star(); })
      .def_property_readonly("f_star", [](const PyDeepLinearFlow& f) { return f.flow.f_star(); })
      .def("rhs", &PyDeepLinearFlow::rhs, py::arg("theta"))
      .def("integrate", &PyDeepLinearFlow::integrate, py::arg("theta0"), py::arg("t0"),
           py::arg("t_eval"), py::arg("method"), py::arg("h"), py::arg("rtol"), py::arg("atol"),
           py::arg("max_step"), py::arg("max_steps"), py::arg("save_products"),
           py::arg("save_imbalances"), py::arg("save_states"), py::arg("progress"),
           py::arg("progress_interval"));

  mod.def("integrate_joins", &integrate_joins_py, py::arg("flow"), py::arg("W0"), py::arg("t0"),
          py::arg("t_eval"), py::arg("method"), py::arg("h"), py::arg("rtol"), py::arg("atol"),
          py::arg("max_step"), py::arg("max_steps"), py::arg("save_norms"), py::arg("save_states"),
          py::arg("member"), py::arg("delta1"), py::arg("alpha"), py::arg("epoch"),
          py::arg("beta"), py::arg("gamma"), py::arg("progress"), py::arg("progress_interval"),
          "GradientFlow.integrate plus, on every accepted step, Definition 1 of Ge et al. 2021 "
          "(a column of S_empty joins S_i where its norm crosses delta1, located on the dense "
          "output, if <w,u_i>^2/||w||^2 >= 1 - alpha^2 there) and the worst margins of the four "
          "conditions of Proposition 1.");
}
