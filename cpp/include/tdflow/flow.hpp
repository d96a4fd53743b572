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
#include "small_contract.hpp"
#include "threads.hpp"

namespace tdflow {

// Column norms below this are recomputed scaled (stableNorm): their squares underflow.
inline constexpr double kUnderflowNorm = 1e-150;

// Column norms and unit directions; a column too small for its squares is rescaled first.
// Plain pointer loops in passes (squares, square roots and reciprocals, scaling), so that the
// square roots and divisions vectorise across columns: for d ~ 10 one column at a time waited on
// their latency, and Eigen's per-column block set-up cost more than the work.
inline void normalize_columns(const Eigen::Ref<const Mat>& W, Mat& Wbar, Vec& norms) {
  const Index d = W.rows(), m = W.cols();
  Wbar.resize(d, m);
  norms.resize(m);
  parallel_blocks(detail::n_col_blocks(m), 2.0 * d * m, [&](Index b) {
    const Index j0 = b * kColBlock, nj = std::min(m, j0 + kColBlock) - j0;
    double* n = norms.data() + j0;
    double inv[kColBlock];
    for (Index jj = 0; jj < nj; ++jj) {
      const double* w = W.col(j0 + jj).data();
      double s = 0.0;
      for (Index i = 0; i < d; ++i) s += w[i] * w[i];
      n[jj] = s;
    }
    // through Eigen: std::sqrt in a loop does not vectorise (errno); both are correctly rounded
    Eigen::Map<Eigen::ArrayXd> na(n, nj);
    na = na.sqrt();
    Eigen::Map<Eigen::ArrayXd>(inv, nj) = na.inverse();
    for (Index jj = 0; jj < nj; ++jj) {
      const Index j = j0 + jj;
      const double* w = W.col(j).data();
      double* wb = Wbar.col(j).data();
      if (n[jj] >= kUnderflowNorm && std::isfinite(inv[jj])) {
        for (Index i = 0; i < d; ++i) wb[i] = w[i] * inv[jj];
        continue;
      }
      if (n[jj] < kUnderflowNorm) n[jj] = W.col(j).stableNorm();  // squares underflow
      const double nn = n[jj], iv = nn > 0 ? 1.0 / nn : 0.0;
      if (nn > 0 && std::isfinite(iv)) {
        for (Index i = 0; i < d; ++i) wb[i] = w[i] * iv;
      } else if (nn > 0) {
        for (Index i = 0; i < d; ++i) wb[i] = w[i] / nn;  // 1/n overflows for subnormal n
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
  // frexp exponents of squared norms: buckets kMinExp .. kMinExp + kBuckets - 1, the ends
  // holding everything beyond (public: the torch backend reads them through _core)
  static constexpr int kMinExp = -1100, kBuckets = 2200;

  // the columns of the last select(), in increasing order
  const std::vector<Index>& active() const { return active_; }

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
    Mat Pact, Wrest, Prest;          // self_contract: active columns, the others
    std::vector<Index> rest;
    Vec norms, coef;
    ActiveSet active_set;
    Mat moment;                      // the residual's unfolding (moment path)
    std::vector<Mat> moment_partial;
    Parts parts;                     // the residual's parts (reused: no allocation per call)
    Vec eval;
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
    } else if (small_fits(dim(), l - 1)) {
      small_rhs(W, dW, ws);
      return;
    } else if (ws.coef.size() >= kSelfMin) {
      self_contract(ws);
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

  // rhs() through small_apply (small_fits(d, l - 1)): the contraction and the velocity of each
  // lane of columns in registers, without the d x m contraction in between.
  void small_rhs(const Eigen::Ref<const Mat>& W, Mat& dW, Workspace& ws) const {
    using detail::Lane;
    const Index d = W.rows(), m = W.cols();
    dW.resize(d, m);
    const int l = order();
    const double lam = lam_, *norms = ws.norms.data(), *w = W.data();
    const Index ldw = W.outerStride();
    small_apply(residual_parts(ws), ws.Wbar.data(), d, m, l - 1,
                [&](auto Dc, const Lane* p, const Lane* wb, Index j0, Index nj) {
                  constexpr int D = decltype(Dc)::value;
                  Lane wl[D], out[D], n;
                  detail::load_lane<D>(w, ldw, j0, nj, wl);
                  detail::load_lane<1>(norms, 1, j0, nj, &n);
                  Lane s = p[0] * wb[0];  // R(wbar^l)
                  for (int i = 1; i < D; ++i) s += p[i] * wb[i];
                  const Lane cp = static_cast<double>(l) * n, cw = static_cast<double>(l - 2) * s + lam;
                  for (int i = 0; i < D; ++i) out[i] = cp * p[i] - cw * wl[i];
                  detail::store_lane<D>(out, j0, nj, dW.data());
                });
  }

  // ||T* - T||_F^2, clamped at 0 (see norm_squared)
  double residual_norm_squared(const Eigen::Ref<const Mat>& W, Workspace& ws) const {
    prepare(W, ws);
    return prepared_norm_squared(ws);
  }

  double loss(const Eigen::Ref<const Mat>& W, Workspace& ws) const {
    return 0.5 * residual_norm_squared(W, ws) + 0.5 * lam_ * W.squaredNorm();
  }

  // (T* - T)(u_i^{(x)l}) for every target direction i
  Vec directional_residual(const Eigen::Ref<const Mat>& W, Workspace& ws) const {
    prepare(W, ws);
    Vec out;
    prepared_directional(ws, out);
    return out;
  }

  // What a run records at a state, with one preparation of W (equal to the two calls above):
  // ||T* - T||_F^2 and the directional residuals.
  void record(const Eigen::Ref<const Mat>& W, Workspace& ws, double& norm_squared_out,
              Vec& directional_out) const {
    prepare(W, ws);
    norm_squared_out = prepared_norm_squared(ws);
    prepared_directional(ws, directional_out);
  }

 private:
  // ws.P = R(wbar_j^{l-1}, I) for every column when the residual holds >= kSelfMin columns: the
  // model part of the active columns is contracted with themselves by the symmetry of their
  // Gram matrix (contract_self_add, 3/4 of the flops), the columns left out of the residual (if
  // any) against the residual as usual, and the two gathered back into ws.P.
  void self_contract(Workspace& ws) const {
    const int q = order() - 1;
    const Index d = dim(), m = ws.Wbar.cols(), a = ws.coef.size();
    if (a == m) {
      contract({target_.part()}, ws.Wbar, q, ws.P);
      contract_self_add(Part(ws.Wbar, ws.coef), q, ws.P);
      return;
    }
    const std::vector<Index>& active = ws.active_set.active();
    contract({target_.part()}, ws.Wact, q, ws.Pact);
    contract_self_add(Part(ws.Wact, ws.coef), q, ws.Pact);
    ws.Wrest.resize(d, m - a);
    ws.rest.clear();
    for (Index j = 0, k = 0; j < m; ++j) {
      if (k < a && active[k] == j) {
        ++k;
      } else {
        ws.Wrest.col(static_cast<Index>(ws.rest.size())) = ws.Wbar.col(j);
        ws.rest.push_back(j);
      }
    }
    contract(residual_parts(ws), ws.Wrest, q, ws.Prest);
    ws.P.resize(d, m);
    for (Index k = 0; k < a; ++k) ws.P.col(active[k]) = ws.Pact.col(k);
    for (Index k = 0; k < m - a; ++k) ws.P.col(ws.rest[k]) = ws.Prest.col(k);
  }

  double prepared_norm_squared(Workspace& ws) const {
    if (use_moment(ContractionCost::norm(dim(), order(), target_.rank(), ws.coef.size()))) {
      moment_residual(ws, false);
      return moment_norm_squared(*table_, ws.moment);
    }
    double v;
    if (small_norm_squared(residual_parts(ws), order(), ws.eval, v)) return v;
    return norm_squared(residual_parts(ws), order());
  }

  void prepared_directional(Workspace& ws, Vec& out) const {
    if (use_moment(ContractionCost::directional(dim(), order(), target_.rank(), ws.coef.size()))) {
      moment_residual(ws, true);
      moment_contract(*table_, ws.moment, target_.U, ws.P);
      out = (ws.P.array() * target_.U.array()).colwise().sum().transpose();
    } else if (small_evaluate(residual_parts(ws), target_.U, order(), out)) {
    } else if (target_.basis) {
      const Mat E = Mat::Identity(dim(), target_.rank());
      evaluate(residual_parts(ws), E, order(), out);
    } else {
      evaluate(residual_parts(ws), target_.U, order(), out);
    }
  }

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

  // The target's part and the active columns', in ws.parts (whose capacity is kept).
  const Parts& residual_parts(Workspace& ws) const {
    Parts& parts = ws.parts;
    parts.clear();
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
  void record(const Eigen::Ref<const Mat>& W, double& norm_squared_out, Vec& directional_out) {
    flow_.record(W, ws_, norm_squared_out, directional_out);
  }

 private:
  const GradientFlow& flow_;
  GradientFlow::Workspace ws_;
};

}  // namespace tdflow
