// Time steppers that run many steps in C++ and hand back only at recording times.
//
// A system is any object with  void rhs(const Mat& W, Mat& dW)  (autonomous flows on d x m
// states). `observe(t, W)` is called at each requested time; `tick(t)` after every step, and
// returning true stops the run (Python uses it for progress bars and Ctrl-C).
// When tick(t) runs, W (the caller's state, held by reference) already holds the accepted state
// at t: events.hpp relies on this to check every accepted step.
//
// Methods: explicit Euler, classic RK4 (fixed step, shortened so that every recording time is
// hit exactly) and Dormand-Prince 5(4) with error control and its 4th-order dense output for
// the recording times (Hairer, Norsett, Wanner, "Solving ODEs I", II.4-II.6).
#pragma once

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "cp_tensor.hpp"
#include "threads.hpp"

namespace tdflow {

enum class Method { Euler = 0, RK4 = 1, Dopri5 = 2 };

enum class Status {
  Finished = 0,      // reached the last recording time
  NonFinite = 1,     // a step produced NaN/Inf; the state is the last finite one
  Stopped = 2,       // tick() asked to stop (interrupt, callback error, event)
  MaxSteps = 3,      // the step budget ran out
  StepTooSmall = 4,  // the adaptive step fell below the resolution of t
};

struct StepOptions {
  double h = 0.05;      // fixed step; for dopri5 the first step (<= 0: chosen automatically)
  double rtol = 1e-8;   // dopri5: relative tolerance, per column of W
  double atol = 0.0;    // dopri5: absolute tolerance, per column norm
  double h_max = std::numeric_limits<double>::infinity();
  long max_steps = 0;   // 0: unlimited
};

struct Outcome {
  Status status = Status::Finished;
  double t = 0.0;  // time the returned state belongs to
  long steps = 0, rhs_evals = 0, rejected = 0;
};

namespace detail {

// Runs body(j0, nj) over blocks of columns, in parallel for large states.
template <class Body>
void for_column_blocks(Index m, Index d, Body&& body) {
  parallel_blocks(n_col_blocks(m), 4.0 * d * m, [&](Index b) {
    const Index j0 = b * kColBlock;
    body(j0, std::min(kColBlock, m - j0));
  });
}

inline bool all_finite(const Mat& X) {
  bool ok = true;
  for_column_blocks(X.cols(), X.rows(), [&](Index j0, Index nj) {
    if (!X.middleCols(j0, nj).allFinite()) ok = false;  // benign race: only ever set to false
  });
  return ok;
}

// sqrt(mean_j (||e_j|| / (atol + rtol * max(||y_j||, ||z_j||)))^2): the error of each column
// relative to that column's size, because tiny columns (norm 1e-15) drive the dynamics.
inline double column_error_norm(const Mat& E, const Mat& Y, const Mat& Z, double rtol,
                                double atol) {
  const Index m = E.cols();
  if (m == 0) return 0.0;
  Vec terms(m);
  for_column_blocks(m, E.rows(), [&](Index j0, Index nj) {
    const Index d = E.rows();
    for (Index j = j0; j < j0 + nj; ++j) {
      const double *e_ = E.col(j).data(), *y = Y.col(j).data(), *z = Z.col(j).data();
      double se = 0.0, sy = 0.0, sz = 0.0;
      for (Index i = 0; i < d; ++i) {
        se += e_[i] * e_[i];
        sy += y[i] * y[i];
        sz += z[i] * z[i];
      }
      const double e = std::sqrt(se);
      const double scale = atol + rtol * std::sqrt(std::max(sy, sz));
      terms[j] = e == 0.0 ? 0.0 : (scale > 0.0 ? e / scale : std::numeric_limits<double>::infinity());
    }
  });
  return std::sqrt(terms.squaredNorm() / static_cast<double>(m));
}

// Dormand-Prince 5(4) tableau.
struct DP5 {
  static constexpr double c2 = 1.0 / 5, c3 = 3.0 / 10, c4 = 4.0 / 5, c5 = 8.0 / 9;
  static constexpr double a21 = 1.0 / 5;
  static constexpr double a31 = 3.0 / 40, a32 = 9.0 / 40;
  static constexpr double a41 = 44.0 / 45, a42 = -56.0 / 15, a43 = 32.0 / 9;
  static constexpr double a51 = 19372.0 / 6561, a52 = -25360.0 / 2187, a53 = 64448.0 / 6561,
                          a54 = -212.0 / 729;
  static constexpr double a61 = 9017.0 / 3168, a62 = -355.0 / 33, a63 = 46732.0 / 5247,
                          a64 = 49.0 / 176, a65 = -5103.0 / 18656;
  static constexpr double b1 = 35.0 / 384, b3 = 500.0 / 1113, b4 = 125.0 / 192,
                          b5 = -2187.0 / 6784, b6 = 11.0 / 84;
  // b - bhat: the embedded error estimate
  static constexpr double e1 = -71.0 / 57600, e3 = 71.0 / 16695, e4 = -71.0 / 1920,
                          e5 = 17253.0 / 339200, e6 = -22.0 / 525, e7 = 1.0 / 40;
  // Dense output: y(t + th*h) = y + h * sum_s K_s * (P[s] . (th, th^2, th^3, th^4)).
  static constexpr double P[7][4] = {
      {1.0, -8048581381.0 / 2820520608, 8663915743.0 / 2820520608, -12715105075.0 / 11282082432},
      {0, 0, 0, 0},
      {0, 131558114200.0 / 32700410799, -68118460800.0 / 10900136933,
       87487479700.0 / 32700410799},
      {0, -1754552775.0 / 470086768, 14199869525.0 / 1410260304, -10690763975.0 / 1880347072},
      {0, 127303824393.0 / 49829197408, -318862633887.0 / 49829197408,
       701980252875.0 / 199316789632},
      {0, -282668133.0 / 205662961, 2019193451.0 / 616988883, -1453857185.0 / 822651844},
      {0, 40617522.0 / 29380423, -110615467.0 / 29380423, 69997945.0 / 29380423}};
};

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

}  // namespace detail

// Fixed-step Euler or RK4. W holds the initial state and receives the final (last finite) one.
template <class Sys, class Observe, class Tick>
Outcome integrate_fixed(Sys& sys, Method method, Mat& W, double t0,
                        const std::vector<double>& t_eval, const StepOptions& opt,
                        Observe&& observe, Tick&& tick) {
  detail::check_times(t0, t_eval);
  if (!(opt.h > 0) || !std::isfinite(opt.h)) throw std::invalid_argument("h must be > 0");
  Outcome out;
  out.t = t0;
  const Index d = W.rows(), m = W.cols();
  Mat K1(d, m), K2, K3, K4, Y(d, m), Wn(d, m);
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
      if (opt.max_steps > 0 && out.steps >= opt.max_steps) {
        out.status = Status::MaxSteps;
        return out;
      }
      if (method == Method::Euler) {
        sys.rhs(W, K1);
        out.rhs_evals += 1;
        detail::for_column_blocks(m, d, [&](Index j0, Index nj) {
          Wn.middleCols(j0, nj) = W.middleCols(j0, nj) + h * K1.middleCols(j0, nj);
        });
      } else {
        sys.rhs(W, K1);
        detail::for_column_blocks(m, d, [&](Index j0, Index nj) {
          Y.middleCols(j0, nj) = W.middleCols(j0, nj) + (0.5 * h) * K1.middleCols(j0, nj);
        });
        sys.rhs(Y, K2);
        detail::for_column_blocks(m, d, [&](Index j0, Index nj) {
          Y.middleCols(j0, nj) = W.middleCols(j0, nj) + (0.5 * h) * K2.middleCols(j0, nj);
        });
        sys.rhs(Y, K3);
        detail::for_column_blocks(m, d, [&](Index j0, Index nj) {
          Y.middleCols(j0, nj) = W.middleCols(j0, nj) + h * K3.middleCols(j0, nj);
        });
        sys.rhs(Y, K4);
        out.rhs_evals += 4;
        detail::for_column_blocks(m, d, [&](Index j0, Index nj) {
          Wn.middleCols(j0, nj) =
              W.middleCols(j0, nj) +
              (h / 6.0) * (K1.middleCols(j0, nj) + 2.0 * K2.middleCols(j0, nj) +
                           2.0 * K3.middleCols(j0, nj) + K4.middleCols(j0, nj));
        });
      }
      if (!detail::all_finite(Wn)) {
        out.status = Status::NonFinite;
        return out;
      }
      W.swap(Wn);
      out.t = (s + 1 == n) ? tb : ta + static_cast<double>(s + 1) * h;
      out.steps += 1;
      if (tick(out.t)) {
        out.status = Status::Stopped;
        return out;
      }
    }
    observe(tb, W);
  }
  return out;
}

// Dormand-Prince 5(4) with error control per column (see column_error_norm).
template <class Sys, class Observe, class Tick>
Outcome integrate_dopri5(Sys& sys, Mat& W, double t0, const std::vector<double>& t_eval,
                         const StepOptions& opt, Observe&& observe, Tick&& tick) {
  using detail::DP5;
  detail::check_times(t0, t_eval);
  if (!(opt.rtol > 0) && !(opt.atol > 0))
    throw std::invalid_argument("rtol or atol must be > 0");
  if (opt.rtol < 0 || opt.atol < 0) throw std::invalid_argument("rtol and atol must be >= 0");
  Outcome out;
  out.t = t0;
  const Index d = W.rows(), m = W.cols();
  const double t_end = t_eval.back();
  size_t i = 0;
  for (; i < t_eval.size() && t_eval[i] == t0; ++i) observe(t0, W);
  if (i == t_eval.size()) return out;

  Mat K[7], Y(d, m), Wn(d, m), E(d, m);
  for (auto& k : K) k.resize(d, m);
  sys.rhs(W, K[0]);
  out.rhs_evals += 1;

  auto combine = [&](Mat& dst, const Mat& base, double h, std::initializer_list<double> coef) {
    detail::for_column_blocks(m, d, [&](Index j0, Index nj) {
      auto blk = dst.middleCols(j0, nj);
      blk = base.middleCols(j0, nj);
      int s = 0;
      for (double c : coef) {
        if (c != 0.0) blk += (h * c) * K[s].middleCols(j0, nj);
        ++s;
      }
    });
  };

  double h = opt.h;
  if (!(h > 0)) {
    // Hairer's starting step: compare the state with its derivative, then try one Euler step.
    const double d0 = detail::column_error_norm(W, W, W, opt.rtol, opt.atol);
    const double d1 = detail::column_error_norm(K[0], W, W, opt.rtol, opt.atol);
    double h0 = (d0 < 1e-5 || d1 < 1e-5) ? 1e-6 : 0.01 * d0 / d1;
    h0 = std::min(h0, t_end - t0);
    combine(Y, W, h0, {1.0});
    sys.rhs(Y, K[1]);
    out.rhs_evals += 1;
    E = (K[1] - K[0]) / h0;
    const double d2 = detail::column_error_norm(E, W, W, opt.rtol, opt.atol);
    const double h1 = std::max(d1, d2) <= 1e-15 ? std::max(1e-6, h0 * 1e-3)
                                                : std::pow(0.01 / std::max(d1, d2), 0.2);
    h = std::min(100 * h0, h1);
  }
  h = std::min(h, opt.h_max);

  bool rejected_last = false;
  while (out.t < t_end) {
    if (opt.max_steps > 0 && out.steps + out.rejected >= opt.max_steps) {
      out.status = Status::MaxSteps;
      return out;
    }
    const double t = out.t;
    bool last = false;
    if (t + h >= t_end || t + 1.01 * h >= t_end) {
      h = t_end - t;
      last = true;
    }
    if (h <= 16 * std::numeric_limits<double>::epsilon() * std::max(1.0, std::abs(t))) {
      out.status = Status::StepTooSmall;
      return out;
    }
    combine(Y, W, h, {DP5::a21});
    sys.rhs(Y, K[1]);
    combine(Y, W, h, {DP5::a31, DP5::a32});
    sys.rhs(Y, K[2]);
    combine(Y, W, h, {DP5::a41, DP5::a42, DP5::a43});
    sys.rhs(Y, K[3]);
    combine(Y, W, h, {DP5::a51, DP5::a52, DP5::a53, DP5::a54});
    sys.rhs(Y, K[4]);
    combine(Y, W, h, {DP5::a61, DP5::a62, DP5::a63, DP5::a64, DP5::a65});
    sys.rhs(Y, K[5]);
    combine(Wn, W, h, {DP5::b1, 0.0, DP5::b3, DP5::b4, DP5::b5, DP5::b6});
    sys.rhs(Wn, K[6]);
    out.rhs_evals += 6;
    E.setZero();
    combine(E, E, h, {DP5::e1, 0.0, DP5::e3, DP5::e4, DP5::e5, DP5::e6, DP5::e7});
    const double err = detail::column_error_norm(E, W, Wn, opt.rtol, opt.atol);

    if (!std::isfinite(err) || !detail::all_finite(Wn) || !detail::all_finite(K[6])) {
      // shrink hard; a state that blows up at every step size is reported as non-finite
      rejected_last = true;
      out.rejected += 1;
      h *= 0.1;
      if (h <= 16 * std::numeric_limits<double>::epsilon() * std::max(1.0, std::abs(t))) {
        out.status = Status::NonFinite;
        return out;
      }
      continue;
    }
    if (err > 1.0) {
      out.rejected += 1;
      h *= std::max(0.2, 0.9 * std::pow(err, -0.2));
      rejected_last = true;
      continue;
    }
    // accepted: dense output at the recording times inside (t, t + h]
    const double t_new = last ? t_end : t + h;
    for (; i < t_eval.size() && t_eval[i] <= t_new; ++i) {
      if (t_eval[i] == t_new) {
        observe(t_new, Wn);
        continue;
      }
      const double th = (t_eval[i] - t) / h;
      const double pw[4] = {th, th * th, th * th * th, th * th * th * th};
      double q[7];
      for (int s = 0; s < 7; ++s)
        q[s] = DP5::P[s][0] * pw[0] + DP5::P[s][1] * pw[1] + DP5::P[s][2] * pw[2] +
               DP5::P[s][3] * pw[3];
      combine(Y, W, h, {q[0], q[1], q[2], q[3], q[4], q[5], q[6]});
      observe(t_eval[i], Y);
    }
    W.swap(Wn);
    K[0].swap(K[6]);  // first same as last
    out.t = t_new;
    out.steps += 1;
    double factor = err == 0.0 ? 10.0 : std::min(10.0, 0.9 * std::pow(err, -0.2));
    if (rejected_last) factor = std::min(1.0, factor);
    rejected_last = false;
    h = std::min(h * factor, opt.h_max);
    if (tick(out.t)) {
      out.status = Status::Stopped;
      return out;
    }
  }
  return out;
}

template <class Sys, class Observe, class Tick>
Outcome integrate(Sys& sys, Method method, Mat& W, double t0, const std::vector<double>& t_eval,
                  const StepOptions& opt, Observe&& observe, Tick&& tick) {
  if (method == Method::Dopri5)
    return integrate_dopri5(sys, W, t0, t_eval, opt, observe, tick);
  return integrate_fixed(sys, method, W, t0, t_eval, opt, observe, tick);
}

}  // namespace tdflow
