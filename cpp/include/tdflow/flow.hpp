// Right-hand sides of the gradient flows.
//
// Deflation model (Ge, Ren, Wang, Zhou 2021), order l >= 3:
//   T = sum_k w_k^{(x)l} / ||w_k||^{l-2} = sum_k ||w_k||^2 wbar_k^{(x)l},
//   L(W) = 1/2 ||T - T*||_F^2 + lam/2 ||W||_F^2,   R = T* - T.
// Written with unit directions wbar = w / ||w|| (so every Gram entry lies in [-1, 1] and no
// ||w||^{-(l-2)} overflows for tiny columns), -grad L is, column by column,
//   dw/dt = l ||w|| R(wbar^{l-1}, I) - (l-2) R(wbar^l) w - lam w,
// with R(wbar^l) = <R(wbar^{l-1}, I), wbar>. A zero column has zero velocity.
#pragma once

#include <Eigen/Dense>

#include <cmath>
#include <stdexcept>
#include <string>

#include "cp_tensor.hpp"
#include "threads.hpp"

namespace tdflow {

// Column norms and unit directions; a column too small for norm() to see is rescaled first.
inline void normalize_columns(const Mat& W, Mat& Wbar, Vec& norms) {
  const Index d = W.rows(), m = W.cols();
  Wbar.resize(d, m);
  norms.resize(m);
  parallel_blocks(detail::n_col_blocks(m), 2.0 * d * m, [&](Index b) {
    const Index j0 = b * kColBlock, j1 = std::min(m, j0 + kColBlock);
    for (Index j = j0; j < j1; ++j) {
      double n = W.col(j).norm();
      if (n < 1e-150) n = W.col(j).stableNorm();
      norms[j] = n;
      if (n > 0) {
        Wbar.col(j) = W.col(j) / n;
      } else {
        Wbar.col(j).setZero();
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

class DeflationFlow {
 public:
  DeflationFlow(Target target, double lam) : target_(std::move(target)), lam_(lam) {
    if (!(lam_ >= 0) || !std::isfinite(lam_))
      throw std::invalid_argument("lam must be finite and >= 0");
  }

  const Target& target() const { return target_; }
  int order() const { return target_.order; }
  double lam() const { return lam_; }
  Index dim() const { return target_.dim(); }

  // dW = -grad L(W)
  void rhs(const Mat& W, Mat& dW) {
    prepare(W);
    const int l = order();
    contract(residual_parts(), Wbar_, l - 1, P_);
    const Index d = W.rows(), m = W.cols();
    dW.resize(d, m);
    parallel_blocks(detail::n_col_blocks(m), 4.0 * d * m, [&](Index b) {
      const Index j0 = b * kColBlock, j1 = std::min(m, j0 + kColBlock);
      for (Index j = j0; j < j1; ++j) {
        const double s = P_.col(j).dot(Wbar_.col(j));  // R(wbar^l)
        dW.col(j) = (l * norms_[j]) * P_.col(j) - ((l - 2) * s + lam_) * W.col(j);
      }
    });
  }

  // ||T* - T||_F^2, clamped at 0 (see norm_squared)
  double residual_norm_squared(const Mat& W) {
    prepare(W);
    return norm_squared(residual_parts(), order());
  }

  double residual_norm(const Mat& W) { return std::sqrt(residual_norm_squared(W)); }

  double loss(const Mat& W) {
    return 0.5 * residual_norm_squared(W) + 0.5 * lam_ * W.squaredNorm();
  }

  // (T* - T)(u_i^{(x)l}) for every target direction i
  Vec directional_residual(const Mat& W) {
    prepare(W);
    Vec out;
    if (target_.basis) {
      const Mat E = Mat::Identity(dim(), target_.rank());
      evaluate(residual_parts(), E, order(), out);
    } else {
      evaluate(residual_parts(), target_.U, order(), out);
    }
    return out;
  }

 private:
  void prepare(const Mat& W) {
    if (W.rows() != dim())
      throw std::invalid_argument("W must have d = " + std::to_string(dim()) + " rows");
    normalize_columns(W, Wbar_, norms_);
    coef_ = -norms_.array().square();
  }

  Parts residual_parts() const {
    Parts parts;
    parts.push_back(target_.part());
    parts.emplace_back(Wbar_, coef_);
    return parts;
  }

  Target target_;
  double lam_;
  Mat Wbar_, P_;
  Vec norms_, coef_;
};

}  // namespace tdflow
