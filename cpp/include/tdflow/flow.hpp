// The deflation model's gradient flow (Ge, Ren, Wang, Zhou 2021), order l >= 3 (the deep
// linear model's flow is in linear.hpp):
//   T = sum_k w_k^{(x)l} / ||w_k||^{l-2} = sum_k ||w_k||^2 wbar_k^{(x)l},
//   L(W) = 1/2 ||T - T*||_F^2 + lam/2 ||W||_F^2,   R = T* - T.
// Written with unit directions wbar = w / ||w|| (so every Gram entry lies in [-1, 1] and no
// ||w||^{-(l-2)} overflows for tiny columns), -grad L is, column by column,
//   dw/dt = l ||w|| R(wbar^{l-1}, I) - (l-2) R(wbar^l) w - lam w,
// with R(wbar^l) = <R(wbar^{l-1}, I), wbar>. A zero column has zero velocity.
// Here: the target T* (Target), the columns left out of R while they are negligible
// (ActiveSet), the flow (GradientFlow, immutable, shared by threads) and GradientFlowSystem,
// a flow with its own scratch: what a stepper of integrate.hpp runs.
// R is contracted through Gram blocks (cp_tensor.hpp) or, when m >> d^{l-1}, through its
// moment tensor (moment.hpp): whichever ContractionCost estimates cheaper, per evaluation.
#pragma once

#include <Eigen/Dense>

#include <atomic>
#include <cmath>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "cp_tensor.hpp"
#include "moment.hpp"
#include "threads.hpp"

namespace tdflow {

// Column norms and unit directions; a column too small for its squares is rescaled first.
// Plain pointer loops: for d ~ 10 Eigen's per-column block set-up costs more than the work.
inline void normalize_columns(const Eigen::Ref<const Mat>& W, Mat& Wbar, Vec& norms) {
  const Index d = W.rows(), m = W.cols();
  Wbar.resize(d, m);
  norms.resize(m);
  parallel_blocks(detail::n_col_blocks(m), 2.0 * d * m, [&](Index b) {
    const Index j0 = b * kColBlock, j1 = std::min(m, j0 + kColBlock);
    for (Index j = j0; j < j1; ++j) {
      const double* w = W.col(j).data();
      double* wb = Wbar.col(j).data();
      double s = 0.0;
      for (Index i = 0; i < d; ++i) s += w[i] * w[i];
      double n = std::sqrt(s);
      if (n < 1e-150) n = W.col(j).stableNorm();  // squares underflow
      norms[j] = n;
      const double inv = n > 0 ? 1.0 / n : 0.0;
      if (n > 0 && std::isfinite(inv)) {
        for (Index i = 0; i < d; ++i) wb[i] = w[i] * inv;
      } else if (n > 0) {
        for (Index i = 0; i < d; ++i) wb[i] = w[i] / n;  // 1/n overflows for subnormal n
      } else {
        for (Index i = 0; i < d; ++i) wb[i] = 0.0;
      }
    }
  });
}

// The target T* = sum_i a_i u_i^{(x)l}: U (d x r), weights a (r).
struct Target {
  Mat U;
  Vec a;
  int order;
  bool basis;  // U is the first r standard basis vectors: Gram rows need no GEMM

  Target(Mat U_, Vec a_, int order_) : U(std::move(U_)), a(std::move(a_)), order(order_) {
    if (order < 3) throw std::invalid_argument("order must be >= 3, got " + std::to_string(order));
    if (U.cols() != a.size()) throw std::invalid_argument("U and a disagree on the rank");
    basis = U.rows() >= U.cols() && U.cwiseEqual(Mat::Identity(U.rows(), U.cols())).all();
  }
  Index dim() const { return U.rows(); }
  Index rank() const { return U.cols(); }
  Part part() const { return Part(U, a, basis); }
};

// Columns left out of the residual: the smallest ones, as long as the sum of their squared
// norms stays <= budget. Column k adds ||w_k||^2 wbar_k^{(x)l} to T, of Frobenius norm
// ||w_k||^2, so leaving them out moves T by at most the budget. Columns are bucketed by the
// binary exponent of ||w_k||^2 and whole buckets are dropped, smallest first: O(m), deterministic,
// and within a factor 2 of the exact greedy choice.
class ActiveSet {
 public:
  const std::vector<Index>& select(const Vec& norms, double budget) {
    const Index m = norms.size();
    active_.clear();
    active_.reserve(m);
    double total = 0.0, smallest = std::numeric_limits<double>::infinity();
    for (Index j = 0; j < m; ++j) {
      const double n2 = norms[j] * norms[j];
      total += n2;
      smallest = std::min(smallest, n2);
    }
    if (!(budget > 0) || smallest > budget) {  // nothing can be left out
      for (Index j = 0; j < m; ++j) active_.push_back(j);
      return active_;
    }
    if (total <= budget) return active_;  // everything can
    bucket_sum_.resize(kBuckets);
    bucket_.resize(m);
    int lo = kBuckets, hi = 0;
    for (Index j = 0; j < m; ++j) {
      const double n2 = norms[j] * norms[j];
      int e = kMinExp;
      if (n2 > 0) std::frexp(n2, &e);
      e = std::min(std::max(e, kMinExp), kMinExp + kBuckets - 1);
      bucket_[j] = e - kMinExp;
      lo = std::min(lo, bucket_[j]);
      hi = std::max(hi, bucket_[j]);
    }
    std::fill(bucket_sum_.begin() + lo, bucket_sum_.begin() + hi + 1, 0.0);
    for (Index j = 0; j < m; ++j) bucket_sum_[bucket_[j]] += norms[j] * norms[j];
    double dropped = 0.0;
    int cut = lo;  // buckets below `cut` are dropped
    while (cut <= hi && dropped + bucket_sum_[cut] <= budget) dropped += bucket_sum_[cut++];
    for (Index j = 0; j < m; ++j)
      if (bucket_[j] >= cut) active_.push_back(j);
    return active_;
  }

 private:
  static constexpr int kMinExp = -1100, kBuckets = 2200;  // frexp exponents of squared norms
  std::vector<Index> active_;
  std::vector<double> bucket_sum_;
  std::vector<int> bucket_;
};

// The deflation model's gradient flow. Immutable after construction, so one object can be
// shared by any number of threads: the scratch of an evaluation lives in a Workspace owned by
// the caller (GradientFlowSystem holds one for a run and reuses it at every step).
class GradientFlow {
 public:
  struct Workspace {
    Mat Wbar, Wact, P;
    Vec norms, coef;
    ActiveSet active_set;
    Mat moment;                      // the residual's unfolding (moment path)
    std::vector<Mat> moment_partial;
  };

  // active_tol: the residual leaves out columns whose summed squared norms stay below
  // active_tol * ||T*||_F (see ActiveSet); 0 evaluates it exactly.
  // contraction: how R is contracted (moment.hpp, ContractionCost): Auto picks the cheaper path
  // at every evaluation.
  GradientFlow(Target target, double lam, double active_tol = 0.0,
                Contraction contraction = Contraction::Auto)
      : target_(std::move(target)), lam_(lam), active_tol_(active_tol), contraction_(contraction) {
    if (!(lam_ >= 0) || !std::isfinite(lam_))
      throw std::invalid_argument("lam must be finite and >= 0");
    if (!(active_tol_ >= 0) || !std::isfinite(active_tol_))
      throw std::invalid_argument("active_tol must be finite and >= 0");
    Parts t{target_.part()};
    target_norm_ = std::sqrt(norm_squared(t, target_.order));
    if (contraction_ != Contraction::Gram) table_ = moment_table(dim(), order(), contraction_);
  }

  double active_tol() const { return active_tol_; }
  double target_norm() const { return target_norm_; }
  // number of columns in the residual at the last evaluation (by any thread)
  Index n_active() const { return n_active_.load(std::memory_order_relaxed); }
  Contraction contraction() const { return contraction_; }
  // the path of the last evaluation (by any thread)
  Contraction last_contraction() const { return last_path_.load(std::memory_order_relaxed); }

  const Target& target() const { return target_; }
  int order() const { return target_.order; }
  double lam() const { return lam_; }
  Index dim() const { return target_.dim(); }

  // dW = -grad L(W)
  void rhs(const Eigen::Ref<const Mat>& W, Mat& dW, Workspace& ws) const {
    prepare(W, ws);
    const int l = order();
    if (use_moment(ContractionCost::rhs(dim(), order(), target_.rank(), W.cols(), ws.coef.size()))) {
      moment_residual(ws, true);
      moment_contract(*table_, ws.moment, ws.Wbar, ws.P);
    } else if (ws.coef.size() == ws.Wbar.cols() && ws.Wbar.cols() >= kSelfMin) {
      // every column is in the residual: its model part is contracted with its own columns
      contract({target_.part()}, ws.Wbar, l - 1, ws.P);
      contract_self_add(Part(ws.Wbar, ws.coef), l - 1, ws.P);
    } else {
      contract(residual_parts(ws), ws.Wbar, l - 1, ws.P);
    }
    const Index d = W.rows(), m = W.cols();
    dW.resize(d, m);
    const Mat &P = ws.P, &Wbar = ws.Wbar;
    const Vec& norms = ws.norms;
    parallel_blocks(detail::n_col_blocks(m), 4.0 * d * m, [&](Index b) {
      const Index j0 = b * kColBlock, j1 = std::min(m, j0 + kColBlock);
      for (Index j = j0; j < j1; ++j) {
        const double* p = P.col(j).data();
        const double* wb = Wbar.col(j).data();
        const double* w = W.col(j).data();
        double* out = dW.col(j).data();
        double s = 0.0;  // R(wbar^l)
        for (Index i = 0; i < d; ++i) s += p[i] * wb[i];
        const double cp = l * norms[j], cw = (l - 2) * s + lam_;
        for (Index i = 0; i < d; ++i) out[i] = cp * p[i] - cw * w[i];
      }
    });
  }

  // ||T* - T||_F^2, clamped at 0 (see norm_squared)
  double residual_norm_squared(const Eigen::Ref<const Mat>& W, Workspace& ws) const {
    prepare(W, ws);
    if (use_moment(ContractionCost::norm(dim(), order(), target_.rank(), ws.coef.size()))) {
      moment_residual(ws, false);
      return moment_norm_squared(*table_, ws.moment);
    }
    return norm_squared(residual_parts(ws), order());
  }

  double loss(const Eigen::Ref<const Mat>& W, Workspace& ws) const {
    return 0.5 * residual_norm_squared(W, ws) + 0.5 * lam_ * W.squaredNorm();
  }

  // (T* - T)(u_i^{(x)l}) for every target direction i
  Vec directional_residual(const Eigen::Ref<const Mat>& W, Workspace& ws) const {
    prepare(W, ws);
    Vec out;
    if (use_moment(ContractionCost::directional(dim(), order(), target_.rank(), ws.coef.size()))) {
      moment_residual(ws, true);
      moment_contract(*table_, ws.moment, target_.U, ws.P);
      out = (ws.P.array() * target_.U.array()).colwise().sum().transpose();
    } else if (target_.basis) {
      const Mat E = Mat::Identity(dim(), target_.rank());
      evaluate(residual_parts(ws), E, order(), out);
    } else {
      evaluate(residual_parts(ws), target_.U, order(), out);
    }
    return out;
  }

 private:
  void prepare(const Eigen::Ref<const Mat>& W, Workspace& ws) const {
    if (W.rows() != dim())
      throw std::invalid_argument("W must have d = " + std::to_string(dim()) + " rows");
    normalize_columns(W, ws.Wbar, ws.norms);
    const std::vector<Index>& active = ws.active_set.select(ws.norms, active_tol_ * target_norm_);
    const Index m = W.cols(), a = static_cast<Index>(active.size());
    n_active_.store(a, std::memory_order_relaxed);
    ws.coef.resize(a);
    if (a == m) {
      ws.coef = -ws.norms.array().square();
      return;
    }
    ws.Wact.resize(W.rows(), a);
    for (Index k = 0; k < a; ++k) {
      ws.Wact.col(k) = ws.Wbar.col(active[k]);
      ws.coef[k] = -ws.norms[active[k]] * ws.norms[active[k]];
    }
  }

  // Whether this evaluation goes through the moment tensor; records the choice.
  bool use_moment(const ContractionCost::Costs& cost) const {
    const bool moment = contraction_ == Contraction::Moment ||
                        (contraction_ == Contraction::Auto && table_ && cost.moment < cost.gram);
    last_path_.store(moment ? Contraction::Moment : Contraction::Gram, std::memory_order_relaxed);
    return moment;
  }

  // ws.moment = the unfolding of the residual, its rows scaled by mult for contractions (scaled)
  void moment_residual(Workspace& ws, bool scaled) const {
    moment_unfolding(*table_, residual_parts(ws), ws.moment, ws.moment_partial);
    if (scaled) ws.moment = table_->mult().asDiagonal() * ws.moment;
  }

  Parts residual_parts(const Workspace& ws) const {
    Parts parts;
    parts.push_back(target_.part());
    const Index a = ws.coef.size();
    if (a == ws.Wbar.cols()) {
      parts.emplace_back(ws.Wbar, ws.coef);
    } else if (a > 0) {
      parts.emplace_back(ws.Wact.data(), ws.Wact.rows(), a, ws.coef.data());
    }
    return parts;
  }

  Target target_;
  double lam_, active_tol_, target_norm_ = 0.0;
  Contraction contraction_;
  std::shared_ptr<const MonomialTable> table_;  // null when the moment path is out of reach
  mutable std::atomic<Index> n_active_{0};  // a statistic only: racing writers are harmless
  mutable std::atomic<Contraction> last_path_{Contraction::Gram};  // likewise
};

// A GradientFlow with a workspace of its own: the system a stepper (integrate.hpp) runs. One
// per run or per thread; the flow it refers to may be shared.
class GradientFlowSystem {
 public:
  explicit GradientFlowSystem(const GradientFlow& flow) : flow_(flow) {}
  const GradientFlow& flow() const { return flow_; }
  void rhs(const Eigen::Ref<const Mat>& W, Mat& dW) { flow_.rhs(W, dW, ws_); }
  double residual_norm_squared(const Eigen::Ref<const Mat>& W) {
    return flow_.residual_norm_squared(W, ws_);
  }
  Vec directional_residual(const Eigen::Ref<const Mat>& W) {
    return flow_.directional_residual(W, ws_);
  }

 private:
  const GradientFlow& flow_;
  GradientFlow::Workspace ws_;
};

}  // namespace tdflow
