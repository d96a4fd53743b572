// One explicit Runge-Kutta step over tableau data (tableaux.hpp) on d x m states: the stages,
// the embedded error estimate measured per column, and the dense output. integrate.hpp drives
// it (step-size control, recording times, events).
#pragma once

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <stdexcept>
#include <vector>

#include "cp_tensor.hpp"
#include "tableaux.hpp"
#include "threads.hpp"

namespace tdflow {
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

// dst = base + h * sum_s coef[s] * K[s] (zero coefficients skipped; base nullptr: zero), column
// block by block; a block of whole columns is contiguous, so plain loops serve (for small states
// an Eigen expression per term cost more than the arithmetic).
inline void combine(Mat& dst, const Mat* base, double h, const double* coef, int n, const Mat* K) {
  const Index d = K[0].rows(), m = K[0].cols();
  for_column_blocks(m, d, [&](Index j0, Index nj) {
    const Index len = d * nj;
    double* out = dst.data() + d * j0;
    if (base) {
      const double* b = base->data() + d * j0;
      for (Index i = 0; i < len; ++i) out[i] = b[i];
    } else {
      for (Index i = 0; i < len; ++i) out[i] = 0.0;
    }
    for (int s = 0; s < n; ++s) {
      if (coef[s] == 0.0) continue;
      const double c = h * coef[s], *k = K[s].data() + d * j0;
      for (Index i = 0; i < len; ++i) out[i] += c * k[i];
    }
  });
}

}  // namespace detail

// The stages K of one method on d x m states. A step from W of size h fills Wn; the stages stay
// valid for the error estimate and the dense output until accept().
class RungeKutta {
 public:
  RungeKutta(const Tableau& tab, Index d, Index m) : tab_(tab), K_(tab.dense_stages) {
    if (tab.dense_stages > kMaxStages || tab.dense_terms > kMaxDenseTerms ||
        (tab.dense == DenseForm::Hermite && !tab.fsal))
      throw std::invalid_argument(std::string("tableau ") + tab.name + " is not supported");
    for (auto& k : K_) k.resize(d, m);
    // The error estimates live in the dense-only stages, which are free until the step is taken
    // (dop853), and the rows F of a Hermite dense output in stages the dense output no longer
    // reads (dop853's stages 1-4); own arrays where there are none.
    const int spare = tab.dense_stages - tab.stages;
    for (int r = 0; r < tab.error_rows; ++r) E_.push_back(r < spare ? &K_[tab.stages + r] : own(d, m));
    if (tab.dense == DenseForm::Hermite) {
      for (int j = 1; j + 1 < tab.stages && static_cast<int>(F_.size()) < tab.dense_terms; ++j)
        if (dead_after_step(j)) F_.push_back(&K_[j]);
      while (static_cast<int>(F_.size()) < tab.dense_terms) F_.push_back(own(d, m));
    }
  }
  RungeKutta(const RungeKutta&) = delete;
  RungeKutta& operator=(const RungeKutta&) = delete;

  Mat& f0() { return K_[0]; }
  Mat& scratch() { return K_[1]; }  // free between steps

  // K_0 = f(W), before the first step. Returns the RHS count.
  template <class Sys>
  long start(Sys& sys, const Mat& W) {
    sys.rhs(W, K_[0]);
    f0_ready_ = true;
    return 1;
  }

  // The stages of a step of size h from W (Y: scratch); Wn = the new state, and for an FSAL
  // method K_{s-1} = f(Wn). Returns the RHS count.
  template <class Sys>
  long step(Sys& sys, const Mat& W, double h, Mat& Y, Mat& Wn) {
    long n = f0_ready_ ? 0 : start(sys, W);
    const int s = tab_.stages, last = tab_.fsal ? s - 1 : s;
    for (int i = 1; i < last; ++i) {
      detail::combine(Y, &W, h, tab_.row(i), i, K_.data());
      sys.rhs(Y, K_[i]);
    }
    detail::combine(Wn, &W, h, tab_.b, last, K_.data());
    n += last - 1;
    if (tab_.fsal) {
      sys.rhs(Wn, K_[s - 1]);
      n += 1;
    }
    dense_ready_ = false;
    return n;
  }

  bool last_stage_finite() const { return !tab_.fsal || detail::all_finite(K_[tab_.stages - 1]); }

  // The step's error relative to the tolerances (<= 1: accept), per column as
  // detail::column_error_norm. Two error rows (dop853.f): |h| S5 / sqrt(m (S5 + w S3)),
  // S_k = sum_j (||e_k,j|| / scale_j)^2, w = kSecondErrorWeight.
  double error_norm(const Mat& W, const Mat& Wn, double h, double rtol, double atol) {
    const int s = tab_.stages;
    if (tab_.error_rows == 1) {
      detail::combine(*E_[0], nullptr, h, tab_.e, s, K_.data());
      return detail::column_error_norm(*E_[0], W, Wn, rtol, atol);
    }
    const Mat &E5 = *E_[0], &E3 = *E_[1];
    detail::combine(*E_[0], nullptr, 1.0, tab_.e, s, K_.data());
    detail::combine(*E_[1], nullptr, 1.0, tab_.e + s, s, K_.data());
    const Index m = W.cols();
    if (m == 0) return 0.0;
    double s5 = detail::column_error_sum(E5, W, Wn, rtol, atol);
    double s3 = detail::column_error_sum(E3, W, Wn, rtol, atol);
    if (s5 == 0.0 && s3 == 0.0) return 0.0;
    double unit = 1.0;
    if (detail::overflowed(s5) || detail::overflowed(s3)) {  // relative to the largest ratio
      unit = std::max(detail::column_error_max(E5, W, Wn, rtol, atol),
                      detail::column_error_max(E3, W, Wn, rtol, atol));
      if (!std::isfinite(unit)) return unit;
      s5 = detail::column_error_sum(E5, W, Wn, rtol, atol, unit);
      s3 = detail::column_error_sum(E3, W, Wn, rtol, atol, unit);
    }
    return std::abs(h) * unit * s5 /
           std::sqrt((s5 + kSecondErrorWeight * s3) * static_cast<double>(m));
  }

  // The dense-only stages and the rows F of a Hermite form, once per step (Y: scratch). Returns
  // the RHS count: dop853 spends its 3 extra stages only on steps that hold a record or event.
  template <class Sys>
  long prepare_dense(Sys& sys, const Mat& W, double h, Mat& Y) {
    if (dense_ready_) return 0;
    for (int i = tab_.stages; i < tab_.dense_stages; ++i) {
      detail::combine(Y, &W, h, tab_.row(i), i, K_.data());
      sys.rhs(Y, K_[i]);
    }
    for (int r = 0; r < static_cast<int>(F_.size()); ++r)
      detail::combine(*F_[r], nullptr, h, tab_.P + r * tab_.dense_stages, tab_.dense_stages,
                      K_.data());
    dense_ready_ = true;
    return tab_.dense_stages - tab_.stages;
  }

  // y(t + th * h) into Y (after prepare_dense)
  void dense(double th, const Mat& W, const Mat& Wn, double h, Mat& Y) const {
    if (tab_.dense == DenseForm::Weights) {
      double q[kMaxStages];
      weights(th, q);
      detail::combine(Y, &W, h, q, tab_.dense_stages, K_.data());
      return;
    }
    detail::for_column_blocks(W.cols(), W.rows(), [&](Index j0, Index nj) {
      for (Index j = j0; j < j0 + nj; ++j) dense_column(th, j, W, Wn, h, Y.col(j).data());
    });
  }

  // column j of y(t + th * h) into y (after prepare_dense)
  // (y accumulates the sums in passes over the column, which vectorise)
  void dense_column(double th, Index j, const Mat& W, const Mat& Wn, double h, double* y) const {
    const Index d = W.rows();
    const double* w = W.col(j).data();
    if (tab_.dense == DenseForm::Weights) {
      double q[kMaxStages];
      weights(th, q);
      for (Index i = 0; i < d; ++i) y[i] = 0.0;
      for (int s = 0; s < tab_.dense_stages; ++s) {
        const double *k = K_[s].col(j).data(), qs = q[s];
        for (Index i = 0; i < d; ++i) y[i] += qs * k[i];
      }
      for (Index i = 0; i < d; ++i) y[i] = w[i] + h * y[i];
      return;
    }
    // Hermite, the innermost term first: F_{4+r} enters F_{3+r} times theta for even r and
    // times 1 - theta for odd r (F_3 enters F_2 times 1 - theta)
    const double x = th, x1 = 1.0 - th, *wn = Wn.col(j).data();
    const double *f0 = K_[0].col(j).data(), *f1 = K_[tab_.stages - 1].col(j).data();
    const int nF = static_cast<int>(F_.size());
    if (nF > 0) {
      const double* F = F_[nF - 1]->col(j).data();
      for (Index i = 0; i < d; ++i) y[i] = F[i];
    }
    for (int r = nF - 2; r >= 0; --r) {
      const double *F = F_[r]->col(j).data(), a = r % 2 == 0 ? x : x1;
      for (Index i = 0; i < d; ++i) y[i] = F[i] + a * y[i];
    }
    for (Index i = 0; i < d; ++i) {
      const double F0 = wn[i] - w[i], F1 = h * f0[i] - F0, F2 = 2.0 * F0 - h * (f0[i] + f1[i]);
      const double v = nF > 0 ? F2 + x1 * y[i] : F2;
      y[i] = w[i] + x * (F0 + x1 * (F1 + x * v));
    }
  }

  // The step was taken: an FSAL method's last stage is the next step's first.
  void accept() {
    if (tab_.fsal) {
      K_[0].swap(K_[tab_.stages - 1]);
    } else {
      f0_ready_ = false;
    }
  }

 private:
  // b_j(theta) of the Weights form
  void weights(double th, double* q) const {
    double pw[kMaxDenseTerms];
    pw[0] = th;
    for (int k = 1; k < tab_.dense_terms; ++k) pw[k] = pw[k - 1] * th;
    for (int s = 0; s < tab_.dense_stages; ++s) {
      const double* p = tab_.P + s * tab_.dense_terms;
      double v = p[0] * pw[0];
      for (int k = 1; k < tab_.dense_terms; ++k) v += p[k] * pw[k];
      q[s] = v;
    }
  }

  // stage j is read neither by the dense-only stages nor by the rows of D
  bool dead_after_step(int j) const {
    for (int i = tab_.stages; i < tab_.dense_stages; ++i)
      if (tab_.row(i)[j] != 0.0) return false;
    for (int r = 0; r < tab_.dense_terms; ++r)
      if (tab_.P[r * tab_.dense_stages + j] != 0.0) return false;
    return true;
  }

  Mat* own(Index d, Index m) {
    own_.emplace_back(d, m);
    return &own_.back();
  }

  const Tableau& tab_;
  std::vector<Mat> K_;
  std::deque<Mat> own_;  // a deque: E_ and F_ point into it
  std::vector<Mat*> E_, F_;
  bool f0_ready_ = false, dense_ready_ = false;
};

}  // namespace tdflow
