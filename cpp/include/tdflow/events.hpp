// Events checked after every accepted step: membership of the sets S_i of Ge, Ren, Wang, Zhou
// (2021), Definition 1.
//
// A column k *joins* S_i at the first accepted step (since its last re-draw) at which
//   ||w_k|| >= delta1   and   wbar_{k,i}^2 = <w_k, u_i>^2 / ||w_k||^2 >= 1 - alpha^2
// (i the direction of largest alignment; for alpha^2 < 1/2 at most one direction qualifies when
// U is orthonormal). The check runs on the accepted state of every step, so no step is missed;
// the recorded time is the end of that step (the crossing lies in (t - h, t]).
//
// The steppers in integrate.hpp call tick(t) after every accepted step with W already holding
// the accepted state at t; `after_each_step` wraps a tick so that the detector sees that state.
#pragma once

#include <Eigen/Dense>

#include <cmath>
#include <stdexcept>
#include <vector>

#include "cp_tensor.hpp"

namespace tdflow {

struct JoinEvent {
  Index column;
  Index direction;
  double t;          // end of the accepted step at which the column joined
  double norm;       // ||w_k|| then
  double alignment;  // wbar_{k,i}^2 then
};

class JoinDetector {
 public:
  // U: d x r unit directions (basis: U is the first r standard basis vectors); armed[k] != 0:
  // column k has not joined any S_i since its last re-draw and is watched.
  JoinDetector(const Mat& U, bool basis, double delta1, double alpha, std::vector<char> armed)
      : U_(U), basis_(basis), delta1_sq_(delta1 * delta1), align_min_(1.0 - alpha * alpha),
        armed_(std::move(armed)) {
    if (!(delta1 > 0) || !std::isfinite(delta1))
      throw std::invalid_argument("delta1 must be finite and > 0");
    if (!(alpha > 0) || !(alpha < 1)) throw std::invalid_argument("alpha must lie in (0, 1)");
  }

  // Checks every armed column of W (d x m) at time t.
  void check(double t, const Mat& W) {
    if (static_cast<Index>(armed_.size()) != W.cols())
      throw std::invalid_argument("armed must have one entry per column of W");
    checks_ += 1;
    const Index r = U_.cols();
    for (Index k = 0; k < W.cols(); ++k) {
      if (!armed_[k]) continue;
      const double n2 = W.col(k).squaredNorm();
      if (!(n2 >= delta1_sq_)) continue;  // cheap test first: most steps stop here
      Index best = 0;
      double best_p2 = -1.0;
      for (Index i = 0; i < r; ++i) {
        const double p = basis_ ? W(i, k) : U_.col(i).dot(W.col(k));
        if (p * p > best_p2) {
          best_p2 = p * p;
          best = i;
        }
      }
      const double align = best_p2 / n2;
      if (align >= align_min_) {
        events_.push_back({k, best, t, std::sqrt(n2), align});
        armed_[k] = 0;
      }
    }
  }

  const std::vector<JoinEvent>& events() const { return events_; }
  const std::vector<char>& armed() const { return armed_; }
  long checks() const { return checks_; }

 private:
  const Mat& U_;
  bool basis_;
  double delta1_sq_, align_min_;
  std::vector<char> armed_;
  std::vector<JoinEvent> events_;
  long checks_ = 0;
};

// A tick for the steppers that first runs hook(t, W) on the accepted state (W is the stepper's
// state, held by reference), then the wrapped tick.
template <class Hook, class Tick>
auto after_each_step(const Mat& W, Hook& hook, Tick& tick) {
  return [&W, &hook, &tick](double t) {
    hook(t, W);
    return tick(t);
  };
}

}  // namespace tdflow
