// Gradient flow on deep linear models  L(W_1, ..., W_L) = f(W_1 W_2 ... W_L)  with
//   f(W) = 1/2 ||Y - W||_F^2        (matrix factorisation, Y n_0 x n_L), or
//   f(W) = 1/2 ||Y - X W||_F^2      (linear regression, X N x n_0, Y N x n_L).
// Layer l is n_{l-1} x n_l. With A_l = W_1...W_{l-1}, B_l = W_{l+1}...W_L and G = grad f(W),
//   dW_l/dt = -A_l^T G B_l^T,
// and the imbalances D_l = W_l^T W_l - W_{l+1} W_{l+1}^T (n_l x n_l) are conserved.
//
// State packing (so that the generic steppers of integrate.hpp apply): a P x L matrix whose
// column l holds vec(W_l) (column-major) followed by zeros, P = max_l n_{l-1} n_l. The padding
// has zero velocity and stays zero. One column per layer makes the adaptive stepper control the
// error of each layer relative to that layer's norm, which keeps the imbalances of small layers
// at integrator accuracy when the layers have very different sizes.
#pragma once

#include <Eigen/Dense>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "cp_tensor.hpp"

namespace tdflow {

class DeepLinearFlow {
 public:
  // dims = (n_0, ..., n_L), L >= 1; Y is n_0 x n_L, or N x n_L with X (N x n_0) when regression.
  DeepLinearFlow(std::vector<Index> dims, Mat Y, Mat X, bool regression)
      : dims_(std::move(dims)), Y_(std::move(Y)), X_(std::move(X)), regression_(regression) {
    if (dims_.size() < 2) throw std::invalid_argument("dims must hold at least n_0 and n_1");
    for (Index n : dims_)
      if (n < 1) throw std::invalid_argument("every layer width must be >= 1");
    rows_ = 0;
    for (size_t l = 1; l < dims_.size(); ++l) rows_ = std::max(rows_, dims_[l - 1] * dims_[l]);
    const Index n0 = dims_.front(), nL = dims_.back();
    if (regression_) {
      if (X_.cols() != n0 || Y_.rows() != X_.rows() || Y_.cols() != nL)
        throw std::invalid_argument("X must be N x n_0 and Y N x n_L");
      XtX_ = X_.transpose() * X_;
      XtY_ = X_.transpose() * Y_;
      // minimum-norm least-squares solution: the minimiser of f closest to 0
      W_star_ = X_.completeOrthogonalDecomposition().solve(Y_);
      f_star_ = 0.5 * (Y_ - X_ * W_star_).squaredNorm();
    } else {
      if (Y_.rows() != n0 || Y_.cols() != nL)
        throw std::invalid_argument("Y must be n_0 x n_L");
      W_star_ = Y_;
      f_star_ = 0.0;
    }
  }

  Index depth() const { return static_cast<Index>(dims_.size()) - 1; }
  const std::vector<Index>& dims() const { return dims_; }
  Index rows() const { return rows_; }  // P: the packed state is P x depth()
  bool regression() const { return regression_; }
  const Mat& W_star() const { return W_star_; }
  double f_star() const { return f_star_; }

  // Layer l (1-based) of a packed state, without a copy.
  MatMap layer(const Mat& theta, Index l) const {
    return MatMap(theta.col(l - 1).data(), dims_[l - 1], dims_[l]);
  }

  Mat product(const Mat& theta) const {
    Mat P = layer(theta, 1);
    for (Index l = 2; l <= depth(); ++l) P = (P * layer(theta, l)).eval();
    return P;
  }

  // grad f at the product W
  Mat grad_f(const Mat& W) const {
    if (regression_) return XtX_ * W - XtY_;
    return W - Y_;
  }

  double f(const Mat& W) const {
    if (regression_) return 0.5 * (Y_ - X_ * W).squaredNorm();
    return 0.5 * (Y_ - W).squaredNorm();
  }

  // f(W) - f*, computed without cancellation: 1/2 ||X (W - W*)||^2 (Pythagoras) or 1/2 ||W - Y||^2.
  double gap(const Mat& W) const {
    if (regression_) return 0.5 * (X_ * (W - W_star_)).squaredNorm();
    return 0.5 * (W - Y_).squaredNorm();
  }

  void rhs(const Mat& theta, Mat& dtheta) const {
    const Index L = depth();
    dtheta.setZero(rows_, L);
    // suffix[l] = W_l ... W_L (l = 1..L); the product is suffix[1]
    std::vector<Mat> suffix(L + 2);
    suffix[L] = layer(theta, L);
    for (Index l = L - 1; l >= 1; --l) suffix[l] = layer(theta, l) * suffix[l + 1];
    const Mat G = grad_f(suffix[1]);
    Mat left = G;  // A_l^T G, n_{l-1} x n_L
    for (Index l = 1; l <= L; ++l) {
      Eigen::Map<Mat> out(dtheta.col(l - 1).data(), dims_[l - 1], dims_[l]);
      if (l == L)
        out.noalias() = -left;
      else
        out.noalias() = -left * suffix[l + 1].transpose();
      if (l < L) left = (layer(theta, l).transpose() * left).eval();
    }
  }

  // D_l = W_l^T W_l - W_{l+1} W_{l+1}^T (n_l x n_l), l = 1..L-1.
  Mat imbalance(const Mat& theta, Index l) const {
    const MatMap A = layer(theta, l), B = layer(theta, l + 1);
    return A.transpose() * A - B * B.transpose();
  }

 private:
  std::vector<Index> dims_;
  Index rows_ = 0;
  Mat Y_, X_, XtX_, XtY_, W_star_;
  bool regression_;
  double f_star_ = 0.0;
};

}  // namespace tdflow
