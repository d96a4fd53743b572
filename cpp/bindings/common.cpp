// The helpers of common.hpp, compiled once.
#include "common.hpp"

#include <cmath>
#include <sstream>

namespace tdflow::bindings {

std::string shape_str(const py::array& a) {
  std::ostringstream s;
  s << "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.shape(i);
  s << (a.ndim() == 1 ? ",)" : ")");
  return s.str();
}

template <class Array>
Array as_real_array(py::handle obj, const char* name, int ndim, py::ssize_t rows,
                    py::ssize_t cols) {
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
  Array f = Array::ensure(arr);
  const double* p = f.data();
  for (py::ssize_t i = 0; i < f.size(); ++i)
    if (!std::isfinite(p[i]))
      throw py::value_error(std::string(name) + " contains NaN or Inf");
  return f;
}
template FArray as_real_array<FArray>(py::handle, const char*, int, py::ssize_t, py::ssize_t);
template CArray as_real_array<CArray>(py::handle, const char*, int, py::ssize_t, py::ssize_t);

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

int check_order(int order) {
  if (order < 3) throw py::value_error("order must be >= 3, got " + std::to_string(order));
  return order;
}

Ticker::Ticker(std::optional<py::function> cb, double interval)
    : cb_(std::move(cb)), interval_(interval), check_every_(std::min(interval, kSignalInterval)) {
  last_check_ = last_report_ = std::chrono::steady_clock::now();
}

bool Ticker::call(double t, bool report) {
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

bool Ticker::due(bool progress, double t) {
  const auto now = std::chrono::steady_clock::now();
  if (std::chrono::duration<double>(now - last_check_).count() < check_every_) return false;
  last_check_ = now;
  const bool report =
      progress && std::chrono::duration<double>(now - last_report_).count() >= interval_;
  if (report) last_report_ = now;
  return call(t, report);
}

const Tableau& parse_method(const std::string& name, const std::string& context) {
  if (const Tableau* t = find_method(name)) return *t;
  std::string names;
  const size_t n = std::size(kMethods);
  for (size_t i = 0; i < n; ++i)
    names += (i == 0 ? "'" : i + 1 == n ? " or '" : ", '") + std::string(kMethods[i]->name) + "'";
  throw py::value_error(context + "method must be " + names + ", got '" + name + "'");
}

namespace {
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
}  // namespace

void put_outcome(py::dict& out, const Outcome& o, py::object error) {
  out["status"] = status_name(o.status);
  out["t_final"] = o.t;
  out["n_steps"] = o.n_steps;
  out["n_rhs"] = o.n_rhs;
  out["n_rejected"] = o.n_rejected;
  out["h_last"] = o.h;
  out["error"] = std::move(error);
}

StepArgs::StepArgs(double t0_, py::handle t_eval_obj, const std::string& method_name, double h,
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
  if (!method.adaptive() && !(h > 0 && std::isfinite(h)))
    throw py::value_error("h must be finite and > 0 for a fixed-step method");
  if (!method.adaptive()) detail::check_step_count(h, t0, t_eval.back());
  if (method.adaptive() && (!(rtol >= 0 && atol >= 0) || !(rtol > 0 || atol > 0)))
    throw py::value_error("rtol and atol must be >= 0 and not both 0");
  if (!(max_step > 0)) throw py::value_error("max_step must be > 0");
  if (max_steps < 0) throw py::value_error("max_steps must be >= 0");
  opt.h = method.adaptive() ? (std::isfinite(h) ? h : 0.0) : h;
  opt.rtol = rtol;
  opt.atol = atol;
  opt.max_step = max_step;
  opt.max_steps = max_steps;
}

}  // namespace tdflow::bindings
