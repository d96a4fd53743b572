// The drivers that run a Runge-Kutta method (runge_kutta.hpp over the tableaux of tableaux.hpp)
// for many steps in C++ and hand back only at recording times: fixed steps (euler, rk4) and
// adaptive steps with error control per column (dopri5, dop853, tsit5), the step-size
// controller's constants named in Controller.
//
// A system is any object with  void rhs(const Mat& W, Mat& dW)  (autonomous flows on d x m
// states). `observe(t, W)` is called at each requested time; `tick(t)` after every step, and
// returning true stops the run (Python uses it for progress bars and Ctrl-C); `poll()` after
// every rejected step, so that a run that keeps rejecting can still be stopped.
// When tick(t) runs, W (the caller's state, held by reference) already holds the accepted state
// at t. A tick with a member step(const StepView&) also sees each accepted step before it is
// taken: both ends and the method's continuous extension (events.hpp checks every accepted step
// through it and locates the crossings of Definition 1 on it).
//
// Fixed steps are shortened so that every recording time is hit exactly; adaptive methods
// interpolate the recording times with their dense output (Hairer, Norsett, Wanner, "Solving
// ODEs I", II.4-II.6).
#pragma once

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <type_traits>
#include <utility>
#include <stdexcept>
#include <vector>

#include "controller.hpp"
#include "cp_tensor.hpp"
#include "runge_kutta.hpp"
#include "tableaux.hpp"
#include "threads.hpp"

namespace tdflow {

enum class Status {
  Finished = 0,      // reached the last recording time
  NonFinite = 1,     // a step produced NaN/Inf; the state is the last finite one
  Stopped = 2,       // tick() asked to stop (interrupt, callback error, event)
  MaxSteps = 3,      // the step budget ran out
  StepTooSmall = 4,  // the adaptive step fell below the resolution of t
};

// The default poll(): never stops.
struct NoPoll {
  bool operator()() const { return false; }
};

// Largest step count a fixed-step run accepts: counts stay exact in a double and fit a long.
constexpr double kMaxFixedSteps = 9007199254740992.0;  // 2^53

struct StepOptions {
  double h = 0.05;      // fixed step; adaptive methods: the first step (<= 0: chosen automatically)
  double rtol = 1e-8;   // adaptive: relative tolerance, per column of W
  double atol = 0.0;    // adaptive: absolute tolerance, per column norm
  double max_step = std::numeric_limits<double>::infinity();  // adaptive: largest step
  long max_steps = 0;   // 0: unlimited
};


struct Outcome {
  Status status = Status::Finished;
  double t = 0.0;  // time the returned state belongs to
  long n_steps = 0, n_rhs = 0, n_rejected = 0;
  double h = 0.0;  // the last step tried
};

// An accepted step [t, t_new] seen from inside: the states at both ends and column(theta, j, out),
// which writes column j of the continuous extension at t + theta (t_new - t), theta in [0, 1]
// (the method's dense output, tableaux.hpp).
struct StepView {
  // A non-owning reference to the stepper's callable: unlike std::function, its captures never
  // go to the heap (one view per accepted step).
  class ColumnFn {
   public:
    template <class F>
    explicit ColumnFn(F& f)
        : obj_(&f), call_([](void* o, double th, Index j, double* y) { (*static_cast<F*>(o))(th, j, y); }) {}
    void operator()(double th, Index j, double* y) const { call_(obj_, th, j, y); }

   private:
    void* obj_;
    void (*call_)(void*, double, Index, double*);
  };

  double t, t_new;
  const Mat& W;
  const Mat& Wn;
  ColumnFn column;
};

namespace detail {

template <class T, class = void>
struct has_step : std::false_type {};
template <class T>
struct has_step<T, std::void_t<decltype(std::declval<T&>().step(std::declval<const StepView&>()))>>
    : std::true_type {};

inline void check_times(double t0, const std::vector<double>& t_eval) {
  if (t_eval.empty()) throw std::invalid_argument("t_eval must not be empty");
  if (!std::isfinite(t0)) throw std::invalid_argument("t0 must be finite");
  for (size_t i = 0; i < t_eval.size(); ++i) {
    if (!std::isfinite(t_eval[i])) throw std::invalid_argument("t_eval must be finite");
    if (t_eval[i] < t0) throw std::invalid_argument("t_eval must not start before t0");
    if (i > 0 && t_eval[i] < t_eval[i - 1])
      throw std::invalid_argument("t_eval must be non-decreasing");
  }
}

// A fixed step h over [t0, t1] must take a number of steps that can be counted exactly.
inline void check_step_count(double h, double t0, double t1) {
  const double n = (t1 - t0) / h;
  if (n <= kMaxFixedSteps) return;
  std::ostringstream s;
  s.precision(6);
  s << "h = " << h << " over t in [" << t0 << ", " << t1 << "] needs " << n
    << " steps, more than 2^53 (9.0e15) can be counted: use a larger h";
  throw std::invalid_argument(s.str());
}

// h below the resolution of t (relative to t, as Hairer's dopri5 and SciPy's solve_ivp: near
// t = 0 fast transients get tiny steps instead of failing); NaN counts as tiny.
inline bool tiny_step(double h, double t) {
  return !(h > kController.tiny * std::numeric_limits<double>::epsilon() * std::abs(t));
}

// Hands an accepted step [t, t_new] of `rk` to tick.step, if the tick has one.
template <class Sys, class Tick>
void show_step(Tick& tick, RungeKutta& rk, Sys& sys, double t, double t_new, const Mat& W,
               const Mat& Wn, double h, Mat& Y, Outcome& out) {
  if constexpr (has_step<std::remove_reference_t<Tick>>::value) {
    auto column = [&](double th, Index j, double* y) {
      out.n_rhs += rk.prepare_dense(sys, W, h, Y);
      rk.dense_column(th, j, W, Wn, h, y);
    };
    tick.step(StepView{t, t_new, W, Wn, StepView::ColumnFn(column)});
  }
}

}  // namespace detail

// Fixed steps of a method without error estimate (euler, rk4). W holds the initial state and
// receives the final (last finite) one.
template <class Sys, class Observe, class Tick>
Outcome integrate_fixed(Sys& sys, const Tableau& method, Mat& W, double t0,
                        const std::vector<double>& t_eval, const StepOptions& opt,
                        Observe&& observe, Tick&& tick) {
  detail::check_times(t0, t_eval);
  if (!(opt.h > 0) || !std::isfinite(opt.h)) throw std::invalid_argument("h must be > 0");
  detail::check_step_count(opt.h, t0, t_eval.back());
  Outcome out;
  out.t = t0;
  out.h = opt.h;
  const Index d = W.rows(), m = W.cols();
  RungeKutta rk(method, d, m);
  Mat Y(d, m), Wn(d, m);
  size_t i = 0;
  for (; i < t_eval.size() && t_eval[i] == t0; ++i) observe(t0, W);
  for (; i < t_eval.size(); ++i) {
    const double ta = out.t, tb = t_eval[i];
    if (tb == ta) {
      observe(tb, W);
      continue;
    }
    // equal steps no longer than h that land on tb exactly
    const long n = std::max(1L, static_cast<long>(std::ceil((tb - ta) / opt.h - 1e-9)));
    const double h = (tb - ta) / static_cast<double>(n);
    for (long s = 0; s < n; ++s) {
      if (opt.max_steps > 0 && out.n_steps >= opt.max_steps) {
        out.status = Status::MaxSteps;
        return out;
      }
      out.n_rhs += rk.step(sys, W, h, Y, Wn);
      if (!detail::all_finite(Wn)) {
        out.status = Status::NonFinite;
        return out;
      }
      const double t_new = (s + 1 == n) ? tb : ta + static_cast<double>(s + 1) * h;
      detail::show_step(tick, rk, sys, out.t, t_new, W, Wn, h, Y, out);
      W.swap(Wn);
      rk.accept();
      out.t = t_new;
      out.n_steps += 1;
      if (tick(out.t)) {
        out.status = Status::Stopped;
        return out;
      }
    }
    observe(tb, W);
  }
  return out;
}

// Adaptive steps of an embedded pair (dopri5, dop853, tsit5) under kController, with error
// control per column (see detail::column_error_norm) and dense output at the recording times.
template <class Sys, class Observe, class Tick, class Poll = NoPoll>
Outcome integrate_adaptive(Sys& sys, const Tableau& method, Mat& W, double t0,
                           const std::vector<double>& t_eval, const StepOptions& opt,
                           Observe&& observe, Tick&& tick, Poll&& poll = Poll{}) {
  detail::check_times(t0, t_eval);
  if (!(opt.rtol > 0) && !(opt.atol > 0))
    throw std::invalid_argument("rtol or atol must be > 0");
  if (opt.rtol < 0 || opt.atol < 0) throw std::invalid_argument("rtol and atol must be >= 0");
  const Controller& c = kController;
  Outcome out;
  out.t = t0;
  const Index d = W.rows(), m = W.cols();
  const double t_end = t_eval.back();
  size_t i = 0;
  for (; i < t_eval.size() && t_eval[i] == t0; ++i) observe(t0, W);
  if (i == t_eval.size()) return out;

  RungeKutta rk(method, d, m);
  Mat Y(d, m), Wn(d, m);
  out.n_rhs += rk.start(sys, W);
  if (!detail::all_finite(rk.f0())) {  // the RHS overflows at the start: no step can help
    out.status = Status::NonFinite;
    return out;
  }
  const double exponent = -1.0 / (method.error_order + 1);

  double h = opt.h;
  if (!(h > 0)) {
    // Hairer's starting step: compare the state with its derivative, then try one Euler step.
    const Mat& f0 = rk.f0();
    const double d0 = detail::column_error_norm(W, W, W, opt.rtol, opt.atol);
    const double d1 = detail::column_error_norm(f0, W, W, opt.rtol, opt.atol);
    double h0 = c.first_ratio * d0 / d1;
    if (d0 < c.first_min_norm || d1 < c.first_min_norm || !(h0 > 0) || !std::isfinite(h0))
      h0 = c.first_fallback;
    h0 = std::min(h0, t_end - t0);
    Y = W + h0 * f0;
    Mat& f1 = rk.scratch();
    sys.rhs(Y, f1);
    out.n_rhs += 1;
    Y = (f1 - f0) / h0;
    const double d2 = detail::column_error_norm(Y, W, W, opt.rtol, opt.atol);
    const double h1 = std::max(d1, d2) <= c.first_flat
                          ? std::max(c.first_fallback, h0 * c.first_flat_ratio)
                          : std::pow(c.first_ratio / std::max(d1, d2), -exponent);
    h = std::min(c.first_growth * h0, h1);
    if (!(h > 0) || !std::isfinite(h)) h = h0;  // f(W + h0 f0) overflowed
  }
  h = std::min(h, opt.max_step);

  bool rejected_last = false;
  while (out.t < t_end) {
    if (opt.max_steps > 0 && out.n_steps + out.n_rejected >= opt.max_steps) {
      out.status = Status::MaxSteps;
      return out;
    }
    const double t = out.t;
    bool last = false;
    if (t + h >= t_end || t + c.stretch * h >= t_end) {
      h = t_end - t;
      last = true;
    }
    out.h = h;
    if (detail::tiny_step(h, t)) {
      out.status = Status::StepTooSmall;
      return out;
    }
    out.n_rhs += rk.step(sys, W, h, Y, Wn);
    const double err = rk.error_norm(W, Wn, h, opt.rtol, opt.atol);

    if (!std::isfinite(err) || !detail::all_finite(Wn) || !rk.last_stage_finite()) {
      // shrink hard; a state that blows up at every step size is reported as non-finite
      rejected_last = true;
      out.n_rejected += 1;
      h *= c.nonfinite_factor;
      if (detail::tiny_step(h, t)) {
        out.status = Status::NonFinite;
        return out;
      }
      if (poll()) {
        out.status = Status::Stopped;
        return out;
      }
      continue;
    }
    if (err > 1.0) {
      out.n_rejected += 1;
      h *= std::max(c.min_factor, c.safety * std::pow(err, exponent));
      rejected_last = true;
      if (poll()) {
        out.status = Status::Stopped;
        return out;
      }
      continue;
    }
    // accepted: dense output at the recording times inside (t, t + h]
    const double t_new = last ? t_end : t + h;
    for (; i < t_eval.size() && t_eval[i] <= t_new; ++i) {
      if (t_eval[i] == t_new) {
        observe(t_new, Wn);
        continue;
      }
      out.n_rhs += rk.prepare_dense(sys, W, h, Y);
      rk.dense((t_eval[i] - t) / h, W, Wn, h, Y);
      observe(t_eval[i], Y);
    }
    detail::show_step(tick, rk, sys, t, t_new, W, Wn, h, Y, out);
    W.swap(Wn);
    rk.accept();
    out.t = t_new;
    out.n_steps += 1;
    double factor =
        err == 0.0 ? c.max_factor : std::min(c.max_factor, c.safety * std::pow(err, exponent));
    if (rejected_last) factor = std::min(1.0, factor);
    rejected_last = false;
    h = std::min(h * factor, opt.max_step);
    if (tick(out.t)) {
      out.status = Status::Stopped;
      return out;
    }
  }
  return out;
}

template <class Sys, class Observe, class Tick, class Poll = NoPoll>
Outcome integrate(Sys& sys, const Tableau& method, Mat& W, double t0,
                  const std::vector<double>& t_eval, const StepOptions& opt, Observe&& observe,
                  Tick&& tick, Poll&& poll = Poll{}) {
  if (method.adaptive())
    return integrate_adaptive(sys, method, W, t0, t_eval, opt, observe, tick, poll);
  return integrate_fixed(sys, method, W, t0, t_eval, opt, observe, tick);
}

}  // namespace tdflow
