// What the binding files that take arrays or run the steppers share: the argument conversions,
// the Ticker that calls back into Python from a run that holds no GIL, the stepping options and
// how a run ended.
#pragma once

#include "pybind11.hpp"

#include <chrono>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "tdflow/cp_tensor.hpp"
#include "tdflow/integrate.hpp"

namespace tdflow::bindings {

// float64, Fortran order: such arrays are used without a copy
using FArray = py::array_t<double, py::array::f_style | py::array::forcecast>;
// float64, C order: the replicas of a C-ordered stack (n, d, m) are read without a copy
using CArray = py::array_t<double, py::array::c_style | py::array::forcecast>;

std::string shape_str(const py::array& a);

// A real float64 view of `obj` in the order of Array (FArray or CArray); TypeError for
// non-numeric data, ValueError for a wrong number of dimensions, a wrong extent (-1: any) or a
// non-finite entry.
template <class Array = FArray>
Array as_real_array(py::handle obj, const char* name, int ndim, py::ssize_t rows = -1,
                    py::ssize_t cols = -1);
extern template FArray as_real_array<FArray>(py::handle, const char*, int, py::ssize_t,
                                             py::ssize_t);
extern template CArray as_real_array<CArray>(py::handle, const char*, int, py::ssize_t,
                                             py::ssize_t);

std::string num(double x);  // 3 significant digits, for messages

double largest_column_norm(const Eigen::Ref<const Mat>& X);

// A result that overflowed double precision (finite inputs, Inf/NaN out) is refused with the
// sizes that caused it (sizes(): only computed then), never handed back as Inf/NaN.
template <class Sizes>
void require_finite(bool finite, const char* what, Sizes&& sizes) {
  if (!finite) throw py::value_error(std::string(what) + " overflows double precision (" + sizes() + ")");
}

inline bool all_finite(double x) { return std::isfinite(x); }
template <class Derived>
bool all_finite(const Eigen::DenseBase<Derived>& x) { return x.allFinite(); }

// compute() run without the GIL (it touches no Python object); its result is built before the
// GIL is taken again.
template <class Compute>
auto without_gil(Compute&& compute) {
  py::gil_scoped_release release;
  return compute();
}

// compute() run without the GIL; its result refused as require_finite says when it overflowed.
template <class Compute, class Sizes>
auto released(const char* what, Compute&& compute, Sizes&& sizes) {
  auto out = without_gil(compute);
  require_finite(all_finite(out), what, sizes);
  return out;
}

inline MatMap mat_of(const FArray& a) {
  return MatMap(a.data(), a.shape(0), a.ndim() == 2 ? a.shape(1) : 1);
}
inline VecMap vec_of(const FArray& a) { return VecMap(a.data(), a.shape(0)); }

int check_order(int order);

// Calls back into Python from a run that holds no GIL: checks for Ctrl-C at most every
// kSignalInterval seconds (also from poll(), on rejected steps) and runs the progress callback
// at most every `interval` seconds. Any Python error stops the run and is handed back with the
// partial result. Used by one thread at a time.
class Ticker {
 public:
  static constexpr double kSignalInterval = 0.1;
  Ticker(std::optional<py::function> cb, double interval);
  // after an accepted step at time t (or, for a batch, with the number of finished runs)
  bool operator()(double t) { return due(true, t); }
  // after a rejected step: signals only
  bool poll() { return due(false, 0.0); }
  // checks signals and, if `report`, calls the callback; true when the run must stop
  bool call(double t, bool report = true);
  py::object error() const { return error_; }

 private:
  bool due(bool progress, double t);

  std::optional<py::function> cb_;
  double interval_, check_every_;
  std::chrono::steady_clock::time_point last_check_, last_report_;
  py::object error_ = py::none();
};

// A run of the steppers without the GIL, as every integrate entry point makes it: run(tick, poll)
// gets the ticker's callbacks (tick after an accepted step, poll after a rejected one) and
// returns the Outcome; a finished run then gets its last progress report, the GIL held again.
template <class Run>
Outcome run_released(Ticker& ticker, Run&& run) {
  const Outcome o = without_gil([&] {
    auto tick = [&](double t) { return ticker(t); };
    auto poll = [&]() { return ticker.poll(); };
    return run(tick, poll);
  });
  if (o.status == Status::Finished) ticker.call(o.t);  // final update
  return o;
}

// The method named `name` (tableaux.hpp); otherwise ValueError listing the names, its message
// after `context` (what was asked for, e.g. "no tableau: ").
const Tableau& parse_method(const std::string& name, const std::string& context = "");

// How a run ended, in the result dict of every integrate entry point: the Outcome and `error`,
// the Python error that stopped it (None: none; Python raises it, see solution.check_outcome).
void put_outcome(py::dict& out, const Outcome& o, py::object error);

// Validated stepping options and recording times, shared by every integrate entry point.
struct StepArgs {
  const Tableau& method;
  double t0;
  std::vector<double> t_eval;
  StepOptions opt;

  StepArgs(double t0_, py::handle t_eval_obj, const std::string& method_name, double h,
           double rtol, double atol, double max_step, long max_steps);
};

}  // namespace tdflow::bindings
