// Time steppers that run many steps in C++ and hand back only at recording times.
//
// A system is any object with  void rhs(const Mat& W, Mat& dW)  (autonomous flows on d x m
// states). `observe(t, W)` is called at each requested time; `tick(t)` after every step, and
// returning true stops the run (Python uses it for progress bars and Ctrl-C); `poll()` after
// every rejected step, so that a run that keeps rejecting can still be stopped.
// When tick(t) runs, W (the caller's state, held by reference) already holds the accepted state
// at t: events.hpp relies on this to check every accepted step. A tick with a member
// step(const StepView&) also sees each accepted step before it is taken: both ends and the
// method's continuous extension (events.hpp locates the crossings of Definition 1 on it).
//
// Methods: explicit Euler, classic RK4 (fixed step, shortened so that every recording time is
// hit exactly) and Dormand-Prince 5(4) with error control and its 4th-order dense output for
// the recording times (Hairer, Norsett, Wanner, "Solving ODEs I", II.4-II.6).
#pragma once

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <sstream>
#include <type_traits>
#include <utility>
#include <stdexcept>
#include <vector>

#include "cp_tensor.hpp"
#include "threads.hpp"

namespace tdflow {

enum class Method { Euler = 0, RK4 = 1, Dopri5 = 2, Dop853 = 3 };

inline bool is_adaptive(Method m) { return m == Method::Dopri5 || m == Method::Dop853; }

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
  double h = 0.05;      // fixed step; for dopri5 the first step (<= 0: chosen automatically)
  double rtol = 1e-8;   // dopri5: relative tolerance, per column of W
  double atol = 0.0;    // dopri5: absolute tolerance, per column norm
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
// (Euler: linear; RK4: its 3rd-order extension; dopri5 / dop853: their dense outputs).
struct StepView {
  double t, t_new;
  const Mat& W;
  const Mat& Wn;
  std::function<void(double, Index, double*)> column;
};

namespace detail {

template <class T, class = void>
struct has_step : std::false_type {};
template <class T>
struct has_step<T, std::void_t<decltype(std::declval<T&>().step(std::declval<const StepView&>()))>>
    : std::true_type {};

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

// ||e_j|| / (atol + rtol * max(||y_j||, ||z_j||)): the error of column j relative to that
// column's size, because tiny columns (norm 1e-15) drive the dynamics.
inline double column_error_ratio(const Mat& E, const Mat& Y, const Mat& Z, Index j, double rtol,
                                 double atol) {
  constexpr double kHuge = std::numeric_limits<double>::max();
  const Index d = E.rows();
  const double *e_ = E.col(j).data(), *y = Y.col(j).data(), *z = Z.col(j).data();
  double se = 0.0, sy = 0.0, sz = 0.0;
  for (Index i = 0; i < d; ++i) {
    se += e_[i] * e_[i];
    sy += y[i] * y[i];
    sz += z[i] * z[i];
  }
  if (se == 0.0) return 0.0;
  double ne = std::sqrt(se), ny = std::sqrt(std::max(sy, sz));
  if (!(se <= kHuge && sy <= kHuge && sz <= kHuge)) {  // squares overflow (norms > 1e154)
    ne = E.col(j).stableNorm();
    ny = std::max(Y.col(j).stableNorm(), Z.col(j).stableNorm());
  }
  const double scale = atol + rtol * ny;
  return scale > 0.0 ? ne / scale : std::numeric_limits<double>::infinity();
}

// sum_j (ratio_j / unit)^2 (see column_error_ratio). Partial sums per column block are added in
// a fixed order (the same result for any thread count).
inline double column_error_sum(const Mat& E, const Mat& Y, const Mat& Z, double rtol, double atol,
                               double unit = 1.0) {
  const Index m = E.cols(), d = E.rows();
  if (m == 0) return 0.0;
  Vec partial = Vec::Zero(n_col_blocks(m));
  for_column_blocks(m, d, [&](Index j0, Index nj) {
    double sum = 0.0;
    for (Index j = j0; j < j0 + nj; ++j) {
      const double r = column_error_ratio(E, Y, Z, j, rtol, atol) / unit;
      sum += r * r;
    }
    partial[j0 / kColBlock] = sum;
  });
  return partial.sum();
}

// max_j ratio_j (NaN if any ratio is NaN)
inline double column_error_max(const Mat& E, const Mat& Y, const Mat& Z, double rtol, double atol) {
  double rmax = 0.0;
  for (Index j = 0; j < E.cols(); ++j) {
    const double r = column_error_ratio(E, Y, Z, j, rtol, atol);
    if (!(r <= rmax)) rmax = r;
  }
  return rmax;
}

inline bool overflowed(double sum) { return sum > std::numeric_limits<double>::max(); }

// sqrt(mean_j ratio_j^2), see column_error_ratio. Ratios above 1e154 (a huge state, or rounding
// noise in its huge derivatives) are summed relative to the largest one, so that their squares
// do not overflow.
inline double column_error_norm(const Mat& E, const Mat& Y, const Mat& Z, double rtol,
                                double atol) {
  const Index m = E.cols();
  if (m == 0) return 0.0;
  const double sum = column_error_sum(E, Y, Z, rtol, atol);
  if (!overflowed(sum)) return std::sqrt(sum / static_cast<double>(m));
  const double rmax = column_error_max(E, Y, Z, rtol, atol);
  if (!std::isfinite(rmax)) return rmax;
  return rmax * std::sqrt(column_error_sum(E, Y, Z, rtol, atol, rmax) / static_cast<double>(m));
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

// DOP853 tableau, as in Hairer's dop853.f and SciPy (stages 13-15 only feed the dense output;
// row 12 of A holds the weights b; the nodes C are not needed by autonomous flows, kept for tests).
struct DOP853 {  // rows end at their last nonzero entry; the rest are zero
  static constexpr double C[16] = {
      0.0, 0.05260015195876773, 0.0789002279381516, 0.1183503419072274, 0.2816496580927726,
      0.3333333333333333, 0.25, 0.3076923076923077, 0.6512820512820513, 0.6, 0.8571428571428571,
      1.0, 1.0, 0.1, 0.2, 0.7777777777777778
  };
  static constexpr double A[16][16] = {
      {},
      {0.05260015195876773},
      {0.0197250569845379, 0.0591751709536137},
      {0.02958758547680685, 0.0, 0.08876275643042054},
      {0.2413651341592667, 0.0, -0.8845494793282861, 0.924834003261792},
      {0.037037037037037035, 0.0, 0.0, 0.17082860872947386, 0.12546768756682242},
      {0.037109375, 0.0, 0.0, 0.17025221101954405, 0.06021653898045596, -0.017578125},
      {0.03709200011850479, 0.0, 0.0, 0.17038392571223998, 0.10726203044637328,
       -0.015319437748624402, 0.008273789163814023},
      {0.6241109587160757, 0.0, 0.0, -3.3608926294469414, -0.868219346841726, 27.59209969944671,
       20.154067550477894, -43.48988418106996},
      {0.47766253643826434, 0.0, 0.0, -2.4881146199716677, -0.590290826836843, 21.230051448181193,
       15.279233632882423, -33.28821096898486, -0.020331201708508627},
      {-0.9371424300859873, 0.0, 0.0, 5.186372428844064, 1.0914373489967295, -8.149787010746927,
       -18.52006565999696, 22.739487099350505, 2.4936055526796523, -3.0467644718982196},
      {2.273310147516538, 0.0, 0.0, -10.53449546673725, -2.0008720582248625, -17.9589318631188,
       27.94888452941996, -2.8589982771350235, -8.87285693353063, 12.360567175794303,
       0.6433927460157636},
      {0.054293734116568765, 0.0, 0.0, 0.0, 0.0, 4.450312892752409, 1.8915178993145003,
       -5.801203960010585, 0.3111643669578199, -0.1521609496625161, 0.20136540080403034,
       0.04471061572777259},
      {0.056167502283047954, 0.0, 0.0, 0.0, 0.0, 0.0, 0.25350021021662483, -0.2462390374708025,
       -0.12419142326381637, 0.15329179827876568, 0.00820105229563469, 0.007567897660545699,
       -0.008298},
      {0.03183464816350214, 0.0, 0.0, 0.0, 0.0, 0.028300909672366776, 0.053541988307438566,
       -0.05492374857139099, 0.0, 0.0, -0.00010834732869724932, 0.0003825710908356584,
       -0.00034046500868740456, 0.1413124436746325},
      {-0.42889630158379194, 0.0, 0.0, 0.0, 0.0, -4.697621415361164, 7.683421196062599,
       4.06898981839711, 0.3567271874552811, 0.0, 0.0, 0.0, -0.0013990241651590145,
       2.9475147891527724, -9.15095847217987},
  };
  static constexpr double E3[12] = {
      -0.18980075407240762, 0.0, 0.0, 0.0, 0.0, 4.450312892752409, 1.8915178993145003,
      -5.801203960010585, -0.4226823213237919, -0.1521609496625161, 0.20136540080403034,
      0.02265179219836082
  };
  static constexpr double E5[12] = {
      0.01312004499419488, 0.0, 0.0, 0.0, 0.0, -1.2251564463762044, -0.4957589496572502,
      1.6643771824549864, -0.35032884874997366, 0.3341791187130175, 0.08192320648511571,
      -0.022355307863886294
  };
  static constexpr double D[4][16] = {
      {-8.428938276109013, 0.0, 0.0, 0.0, 0.0, 0.5667149535193777, -3.0689499459498917,
       2.38466765651207, 2.117034582445028, -0.871391583777973, 2.2404374302607883,
       0.6315787787694688, -0.08899033645133331, 18.148505520854727, -9.194632392478356,
       -4.436036387594894},
      {10.427508642579134, 0.0, 0.0, 0.0, 0.0, 242.28349177525817, 165.20045171727028,
       -374.5467547226902, -22.113666853125306, 7.733432668472264, -30.674084731089398,
       -9.332130526430229, 15.697238121770845, -31.139403219565178, -9.35292435884448,
       35.81684148639408},
      {19.985053242002433, 0.0, 0.0, 0.0, 0.0, -387.0373087493518, -189.17813819516758,
       527.8081592054236, -11.57390253995963, 6.8812326946963, -1.0006050966910838,
       0.7777137798053443, -2.778205752353508, -60.19669523126412, 84.32040550667716,
       11.99229113618279},
      {-25.69393346270375, 0.0, 0.0, 0.0, 0.0, -154.18974869023643, -231.5293791760455,
       357.6391179106141, 93.40532418362432, -37.45832313645163, 104.0996495089623,
       29.8402934266605, -43.53345659001114, 96.32455395918828, -39.17726167561544,
       -149.72683625798564},
  };
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

}  // namespace detail

// Fixed-step Euler or RK4. W holds the initial state and receives the final (last finite) one.
template <class Sys, class Observe, class Tick>
Outcome integrate_fixed(Sys& sys, Method method, Mat& W, double t0,
                        const std::vector<double>& t_eval, const StepOptions& opt,
                        Observe&& observe, Tick&& tick) {
  detail::check_times(t0, t_eval);
  if (!(opt.h > 0) || !std::isfinite(opt.h)) throw std::invalid_argument("h must be > 0");
  detail::check_step_count(opt.h, t0, t_eval.back());
  Outcome out;
  out.t = t0;
  out.h = opt.h;
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
      if (opt.max_steps > 0 && out.n_steps >= opt.max_steps) {
        out.status = Status::MaxSteps;
        return out;
      }
      if (method == Method::Euler) {
        sys.rhs(W, K1);
        out.n_rhs += 1;
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
        out.n_rhs += 4;
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
      const double t_new = (s + 1 == n) ? tb : ta + static_cast<double>(s + 1) * h;
      if constexpr (detail::has_step<std::remove_reference_t<Tick>>::value) {
        tick.step(StepView{out.t, t_new, W, Wn, [&](double th, Index j, double* y) {
          // Euler: linear; RK4: b1 = th - 3th^2/2 + 2th^3/3, b2 = b3 = th^2 - 2th^3/3,
          // b4 = -th^2/2 + 2th^3/3 (Hairer, Norsett, Wanner I, II.6)
          const double t2 = th * th, t3 = t2 * th;
          const double b1 = method == Method::Euler ? th : th - 1.5 * t2 + 2.0 * t3 / 3.0;
          const double b2 = t2 - 2.0 * t3 / 3.0, b4 = -0.5 * t2 + 2.0 * t3 / 3.0;
          for (Index i = 0; i < d; ++i) {
            double v = b1 * K1(i, j);
            if (method != Method::Euler) v += b2 * (K2(i, j) + K3(i, j)) + b4 * K4(i, j);
            y[i] = W(i, j) + h * v;
          }
        }});
      }
      W.swap(Wn);
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

namespace detail {

// dst = base + h * sum_s coef[s] * K[s] (zero coefficients skipped; base nullptr: zero), column
// block by block.
inline void combine(Mat& dst, const Mat* base, double h, const double* coef, int n, const Mat* K) {
  const Index d = K[0].rows(), m = K[0].cols();
  for_column_blocks(m, d, [&](Index j0, Index nj) {
    auto blk = dst.middleCols(j0, nj);
    if (base) {
      blk = base->middleCols(j0, nj);
    } else {
      blk.setZero();
    }
    for (int s = 0; s < n; ++s)
      if (coef[s] != 0.0) blk += (h * coef[s]) * K[s].middleCols(j0, nj);
  });
}

// h below the resolution of t (relative to t, as Hairer's dopri5 and SciPy's solve_ivp: near
// t = 0 fast transients get tiny steps instead of failing); NaN counts as tiny.
inline bool tiny_step(double h, double t) {
  return !(h > 16 * std::numeric_limits<double>::epsilon() * std::abs(t));
}

// Dormand-Prince 5(4): 6 new RHS per step (first same as last), 4th-order dense output for free.
class Dopri5Scheme {
 public:
  static constexpr int kErrorOrder = 4;  // step factor err^(-1/(kErrorOrder+1))
  Dopri5Scheme(Index d, Index m) : E_(d, m) {
    for (auto& k : K_) k.resize(d, m);
  }
  Mat& f0() { return K_[0]; }
  Mat& scratch() { return K_[1]; }

  // Stages at W with step h: Wn and K[6] = f(Wn). Returns the RHS count.
  template <class Sys>
  long attempt(Sys& sys, const Mat& W, double h, Mat& Y, Mat& Wn) {
    using D = DP5;
    const double a[5][5] = {{D::a21}, {D::a31, D::a32}, {D::a41, D::a42, D::a43},
                            {D::a51, D::a52, D::a53, D::a54},
                            {D::a61, D::a62, D::a63, D::a64, D::a65}};
    for (int s = 1; s <= 5; ++s) {
      combine(Y, &W, h, a[s - 1], s, K_);
      sys.rhs(Y, K_[s]);
    }
    const double b[6] = {D::b1, 0.0, D::b3, D::b4, D::b5, D::b6};
    combine(Wn, &W, h, b, 6, K_);
    sys.rhs(Wn, K_[6]);
    return 6;
  }

  bool last_stage_finite() const { return all_finite(K_[6]); }

  double error_norm(const Mat& W, const Mat& Wn, double h, double rtol, double atol) {
    using D = DP5;
    const double e[7] = {D::e1, 0.0, D::e3, D::e4, D::e5, D::e6, D::e7};
    combine(E_, nullptr, h, e, 7, K_);
    return column_error_norm(E_, W, Wn, rtol, atol);
  }

  template <class Sys>
  long prepare_dense(Sys&, const Mat&, const Mat&, double) { return 0; }

  // y(t + th * h) into Y
  void dense(double th, const Mat& W, const Mat&, double h, Mat& Y) const {
    double q[7];
    weights(th, q);
    combine(Y, &W, h, q, 7, K_);
  }

  // column j of y(t + th * h) into y
  void dense_column(double th, Index j, const Mat& W, const Mat&, double h, double* y) const {
    double q[7];
    weights(th, q);
    for (Index i = 0; i < W.rows(); ++i) {
      double v = 0.0;
      for (int s = 0; s < 7; ++s) v += q[s] * K_[s](i, j);
      y[i] = W(i, j) + h * v;
    }
  }

  void accept() { K_[0].swap(K_[6]); }  // first same as last

 private:
  static void weights(double th, double* q) {
    const double pw[4] = {th, th * th, th * th * th, th * th * th * th};
    for (int s = 0; s < 7; ++s)
      q[s] = DP5::P[s][0] * pw[0] + DP5::P[s][1] * pw[1] + DP5::P[s][2] * pw[2] +
             DP5::P[s][3] * pw[3];
  }
  Mat K_[7], E_;
};

// DOP853 (Hairer, Norsett, Wanner; coefficients as in Hairer's dop853.f and SciPy): order 8, 12
// new RHS per step, error from the 5th- and 3rd-order estimates combined as in dop853.f, and
// a 7th-order dense output that costs 3 more RHS, spent only on steps that hold a record.
class Dop853Scheme {
 public:
  static constexpr int kErrorOrder = 7;
  Dop853Scheme(Index d, Index m) : E3_(d, m) {
    for (auto& k : K_) k.resize(d, m);
  }
  Mat& f0() { return K_[0]; }
  Mat& scratch() { return K_[1]; }

  template <class Sys>
  long attempt(Sys& sys, const Mat& W, double h, Mat& Y, Mat& Wn) {
    for (int s = 1; s < 12; ++s) {
      combine(Y, &W, h, DOP853::A[s], s, K_);
      sys.rhs(Y, K_[s]);
    }
    combine(Wn, &W, h, DOP853::A[12], 12, K_);  // row 12 of A holds the weights b
    sys.rhs(Wn, K_[12]);
    dense_ready_ = false;
    return 12;
  }

  bool last_stage_finite() const { return all_finite(K_[12]); }

  // |h| * S5 / sqrt(m (S5 + 0.01 S3)), S_k = sum_j (||e_k,j|| / scale_j)^2 (dop853.f's norm,
  // taken per column as for dopri5)
  double error_norm(const Mat& W, const Mat& Wn, double h, double rtol, double atol) {
    Mat& E5 = scratch_for_error();
    combine(E5, nullptr, 1.0, DOP853::E5, 12, K_);
    combine(E3_, nullptr, 1.0, DOP853::E3, 12, K_);
    const Index m = W.cols();
    if (m == 0) return 0.0;
    double s5 = column_error_sum(E5, W, Wn, rtol, atol);
    double s3 = column_error_sum(E3_, W, Wn, rtol, atol);
    if (s5 == 0.0 && s3 == 0.0) return 0.0;
    double unit = 1.0;
    if (overflowed(s5) || overflowed(s3)) {  // sums relative to the largest ratio, as dopri5's
      unit = std::max(column_error_max(E5, W, Wn, rtol, atol), column_error_max(E3_, W, Wn, rtol, atol));
      if (!std::isfinite(unit)) return unit;
      s5 = column_error_sum(E5, W, Wn, rtol, atol, unit);
      s3 = column_error_sum(E3_, W, Wn, rtol, atol, unit);
    }
    return std::abs(h) * unit * s5 / std::sqrt((s5 + 0.01 * s3) * static_cast<double>(m));
  }

  // The three extra stages and the interpolation coefficients F3..F6 (stored in K[1..4],
  // whose columns of D are zero, so they are free once the step is taken).
  template <class Sys>
  long prepare_dense(Sys& sys, const Mat& W, const Mat&, double h) {
    if (dense_ready_) return 0;
    Mat& Y = E3_;
    for (int s = 13; s < 16; ++s) {
      combine(Y, &W, h, DOP853::A[s], s, K_);
      sys.rhs(Y, K_[s]);
    }
    for (int i = 0; i < 4; ++i) combine(K_[1 + i], nullptr, h, DOP853::D[i], 16, K_);
    dense_ready_ = true;
    return 3;
  }

  // y = W + x (F0 + (1-x) (F1 + x (F2 + (1-x) (F3 + x (F4 + (1-x) (F5 + x F6)))))) with
  // F0 = Wn - W, F1 = h f0 - F0, F2 = 2 F0 - h (f0 + f1)
  void dense(double x, const Mat& W, const Mat& Wn, double h, Mat& Y) const {
    for_column_blocks(W.cols(), W.rows(), [&](Index j0, Index nj) {
      for (Index j = j0; j < j0 + nj; ++j) dense_column(x, j, W, Wn, h, Y.col(j).data());
    });
  }

  // column j of the dense output (after prepare_dense) into out
  void dense_column(double x, Index j, const Mat& W, const Mat& Wn, double h, double* out) const {
    const double y = 1.0 - x;
    const double *w = W.col(j).data(), *wn = Wn.col(j).data();
    const double *f0 = K_[0].col(j).data(), *f1 = K_[12].col(j).data();
    const double *F3 = K_[1].col(j).data(), *F4 = K_[2].col(j).data(), *F5 = K_[3].col(j).data(),
                 *F6 = K_[4].col(j).data();
    for (Index i = 0; i < W.rows(); ++i) {
      const double F0 = wn[i] - w[i], F1 = h * f0[i] - F0, F2 = 2.0 * F0 - h * (f0[i] + f1[i]);
      const double v = F2 + y * (F3[i] + x * (F4[i] + y * (F5[i] + x * F6[i])));
      out[i] = w[i] + x * (F0 + y * (F1 + x * v));
    }
  }

  void accept() { K_[0].swap(K_[12]); }

 private:
  // K[13] is free between the error estimate and the extra stages
  Mat& scratch_for_error() { return K_[13]; }
  Mat K_[16], E3_;
  bool dense_ready_ = false;
};

}  // namespace detail

// Adaptive embedded Runge-Kutta (Scheme: detail::Dopri5Scheme or detail::Dop853Scheme) with
// error control per column (see column_error_norm) and dense output at the recording times.
template <class Scheme, class Sys, class Observe, class Tick, class Poll = NoPoll>
Outcome integrate_adaptive(Sys& sys, Mat& W, double t0, const std::vector<double>& t_eval,
                           const StepOptions& opt, Observe&& observe, Tick&& tick,
                           Poll&& poll = Poll{}) {
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

  Scheme scheme(d, m);
  Mat Y(d, m), Wn(d, m);
  sys.rhs(W, scheme.f0());
  out.n_rhs += 1;
  if (!detail::all_finite(scheme.f0())) {  // the RHS overflows at the start: no step can help
    out.status = Status::NonFinite;
    return out;
  }
  const double exponent = -1.0 / (Scheme::kErrorOrder + 1);

  double h = opt.h;
  if (!(h > 0)) {
    // Hairer's starting step: compare the state with its derivative, then try one Euler step.
    const Mat& f0 = scheme.f0();
    const double d0 = detail::column_error_norm(W, W, W, opt.rtol, opt.atol);
    const double d1 = detail::column_error_norm(f0, W, W, opt.rtol, opt.atol);
    double h0 = 0.01 * d0 / d1;
    if (d0 < 1e-5 || d1 < 1e-5 || !(h0 > 0) || !std::isfinite(h0)) h0 = 1e-6;
    h0 = std::min(h0, t_end - t0);
    Y = W + h0 * f0;
    Mat& f1 = scheme.scratch();
    sys.rhs(Y, f1);
    out.n_rhs += 1;
    Y = (f1 - f0) / h0;
    const double d2 = detail::column_error_norm(Y, W, W, opt.rtol, opt.atol);
    const double h1 = std::max(d1, d2) <= 1e-15 ? std::max(1e-6, h0 * 1e-3)
                                                : std::pow(0.01 / std::max(d1, d2), -exponent);
    h = std::min(100 * h0, h1);
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
    if (t + h >= t_end || t + 1.01 * h >= t_end) {
      h = t_end - t;
      last = true;
    }
    out.h = h;
    if (detail::tiny_step(h, t)) {
      out.status = Status::StepTooSmall;
      return out;
    }
    out.n_rhs += scheme.attempt(sys, W, h, Y, Wn);
    const double err = scheme.error_norm(W, Wn, h, opt.rtol, opt.atol);

    if (!std::isfinite(err) || !detail::all_finite(Wn) || !scheme.last_stage_finite()) {
      // shrink hard; a state that blows up at every step size is reported as non-finite
      rejected_last = true;
      out.n_rejected += 1;
      h *= 0.1;
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
      h *= std::max(0.2, 0.9 * std::pow(err, exponent));
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
      out.n_rhs += scheme.prepare_dense(sys, W, Wn, h);
      scheme.dense((t_eval[i] - t) / h, W, Wn, h, Y);
      observe(t_eval[i], Y);
    }
    if constexpr (detail::has_step<std::remove_reference_t<Tick>>::value) {
      tick.step(StepView{t, t_new, W, Wn, [&](double th, Index j, double* y) {
        out.n_rhs += scheme.prepare_dense(sys, W, Wn, h);
        scheme.dense_column(th, j, W, Wn, h, y);
      }});
    }
    W.swap(Wn);
    scheme.accept();
    out.t = t_new;
    out.n_steps += 1;
    double factor = err == 0.0 ? 10.0 : std::min(10.0, 0.9 * std::pow(err, exponent));
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
Outcome integrate(Sys& sys, Method method, Mat& W, double t0, const std::vector<double>& t_eval,
                  const StepOptions& opt, Observe&& observe, Tick&& tick, Poll&& poll = Poll{}) {
  if (method == Method::Dopri5)
    return integrate_adaptive<detail::Dopri5Scheme>(sys, W, t0, t_eval, opt, observe, tick, poll);
  if (method == Method::Dop853)
    return integrate_adaptive<detail::Dop853Scheme>(sys, W, t0, t_eval, opt, observe, tick, poll);
  return integrate_fixed(sys, method, W, t0, t_eval, opt, observe, tick);
}

}  // namespace tdflow
