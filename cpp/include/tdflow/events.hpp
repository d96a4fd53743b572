// Watching Algorithm 2 of Ge, Ren, Wang, Zhou (2021) along every accepted step: the sets S_i of
// Definition 1 and the four conditions of Proposition 1.
//
// Definition 1, as printed: column k is in S_i iff at some time since its latest
// re-initialisation  ||w_k|| = delta1  and  wbar_{k,i}^2 >= 1 - alpha^2.  So a join happens only
// at a crossing of the level delta1: on every accepted step where ||w_k||^2 - delta1^2 changes
// sign, the crossing time is located on the stepper's continuous extension (StepView, a
// regula-falsi root of ||y_k(theta)||^2 - delta1^2), and the column joins the direction of its
// largest alignment if that alignment is >= 1 - alpha^2 there. A column that crosses badly
// aligned does not join (it stays in S_empty and is watched for its next crossing). Members stay
// members: only a re-draw (in Python) clears them. Crossings inside one step that leave the
// sign at both ends unchanged (a touch, or up and down again) are not seen.
//
// 1 - wbar_i^2 is computed as ||w - <w,u_i> u_i||^2 / ||w||^2 ("misalignment"), without the
// cancellation of 1 - p^2/||w||^2, so that Theorem 1's alpha (1e-8 and below, alpha^2 under the
// rounding unit of 1) stays meaningful.
//
// Proposition 1 (s the epoch index, m the number of columns, beta = beta^(s)), at every accepted
// state, each as a margin (>= 0: holds; the worst value and its time are kept):
//   (a) alpha - (1 - wbar_k^2)                       for every member of S_k,
//   (b) alpha^2 + 4 s m delta1^2 - E_k[1 - wbar_k^2]  for every non-empty S_k (weights ||w||^2),
//   (c) (a_k - ahat_k) - (lam/6 - s m delta1^2)       for every k, and
//       (lam + s m delta1^2) - (a_k - ahat_k)         for every k with a_k >= beta / (1 - gamma),
//   (d) delta1 - ||w||                                for every column of S_empty.
// An empty quantifier leaves its margin at +inf.
#pragma once

#include <Eigen/Dense>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "cp_tensor.hpp"
#include "integrate.hpp"

namespace tdflow {

struct Crossing {
  Index column;
  Index direction;      // the direction of largest alignment at the crossing
  double t;             // the time at which ||w_k|| = delta1
  double norm;          // ||w_k(t)|| (delta1 up to the root's tolerance)
  double misalignment;  // 1 - wbar_{k,direction}^2 there
  bool upward;          // the norm grows through delta1
  bool joined;          // misalignment <= alpha^2: k joined S_direction
};

struct Prop1Params {
  double delta1, alpha, lam;
  double slack;  // s m delta1^2
  double big;    // beta^(s) / (1 - gamma): (c)'s upper bound applies to a_k >= big
};

// Worst margins of Proposition 1 over the watched states, and the time of each.
struct Prop1Margins {
  static constexpr int kConditions = 5;  // a, b, c_lower, c_upper, d
  double margin[kConditions];
  double time[kConditions];
  Prop1Margins() {
    for (int c = 0; c < kConditions; ++c) {
      margin[c] = std::numeric_limits<double>::infinity();
      time[c] = std::numeric_limits<double>::quiet_NaN();
    }
  }
  void update(int c, double value, double t) {
    if (value < margin[c]) {
      margin[c] = value;
      time[c] = t;
    }
  }
};

class DeflationWatch {
 public:
  // U: d x r unit directions (basis: the first r standard basis vectors); a: the weights;
  // member[k]: the direction whose S_i holds column k, -1 for S_empty; W0 the state at t0.
  DeflationWatch(const Mat& U, bool basis, const Vec& a, const Prop1Params& p,
                 std::vector<Index> member, const Mat& W0, double t0)
      : U_(U), basis_(basis), a_(a), p_(p), member_(std::move(member)),
        below_(W0.cols()) {
    if (!(p.delta1 > 0) || !std::isfinite(p.delta1))
      throw std::invalid_argument("delta1 must be finite and > 0");
    if (!(p.alpha > 0) || !(p.alpha < 1)) throw std::invalid_argument("alpha must lie in (0, 1)");
    if (static_cast<Index>(member_.size()) != W0.cols())
      throw std::invalid_argument("member must have one entry per column of W");
    for (Index k : member_)
      if (k < -1 || k >= U.cols()) throw std::invalid_argument("member entries must be -1 or < r");
    check(t0, W0);
  }

  // An accepted step: crossings of delta1 (joins), then Proposition 1 at its end.
  void step(const StepView& v) {
    const double d1sq = p_.delta1 * p_.delta1;
    for (Index k = 0; k < v.Wn.cols(); ++k) {
      if (member_[k] >= 0) continue;
      const bool below = v.Wn.col(k).squaredNorm() < d1sq;
      if (below != below_[k]) locate(v, k, below_[k]);
    }
    check(v.t_new, v.Wn);
  }

  const std::vector<Crossing>& crossings() const { return crossings_; }
  const std::vector<Index>& member() const { return member_; }
  const Prop1Margins& margins() const { return margins_; }
  long checks() const { return checks_; }

 private:
  // 1 - wbar_i^2 of y (length d, norm^2 n2 > 0), without cancellation
  double misalignment(const double* y, Index i, double n2) const {
    const Index d = U_.rows();
    double off = 0.0;
    if (basis_) {
      for (Index j = 0; j < d; ++j)
        if (j != i) off += y[j] * y[j];
    } else {
      double p = 0.0;
      for (Index j = 0; j < d; ++j) p += U_(j, i) * y[j];
      for (Index j = 0; j < d; ++j) {
        const double e = y[j] - p * U_(j, i);
        off += e * e;
      }
    }
    return std::min(1.0, off / n2);
  }

  // The crossing of column k inside the step (from below if was_below): regula falsi with the
  // Illinois modification on g(theta) = ||y_k(theta)||^2 - delta1^2, bracketed by the step's ends.
  void locate(const StepView& v, Index k, bool was_below) {
    const Index d = v.W.rows();
    const double d1sq = p_.delta1 * p_.delta1;
    Vec& y = column_;
    y.resize(d);
    double lo = 0.0, hi = 1.0;
    double glo = v.W.col(k).squaredNorm() - d1sq, ghi = v.Wn.col(k).squaredNorm() - d1sq;
    double theta = 1.0;
    y = v.Wn.col(k);
    int last = 0;
    for (int it = 0; it < 200 && hi - lo > 4 * std::numeric_limits<double>::epsilon(); ++it) {
      double th = (lo * ghi - hi * glo) / (ghi - glo);
      if (!(th > lo && th < hi)) th = 0.5 * (lo + hi);
      v.column(th, k, y.data());
      const double g = y.squaredNorm() - d1sq;
      theta = th;
      if (g == 0.0) break;
      if ((g < 0) == (glo < 0)) {
        lo = th;
        glo = g;
        if (last == -1) ghi *= 0.5;
        last = -1;
      } else {
        hi = th;
        ghi = g;
        if (last == 1) glo *= 0.5;
        last = 1;
      }
    }
    const double n2 = y.squaredNorm();
    Index best = 0;
    double best_p2 = -1.0;
    for (Index i = 0; i < U_.cols(); ++i) {
      const double p = basis_ ? y[i] : U_.col(i).dot(y);
      if (p * p > best_p2) {
        best_p2 = p * p;
        best = i;
      }
    }
    const double mis = U_.cols() > 0 && n2 > 0 ? misalignment(y.data(), best, n2) : 1.0;
    const bool joined = U_.cols() > 0 && mis <= p_.alpha * p_.alpha;
    crossings_.push_back({k, U_.cols() > 0 ? best : -1, v.t + theta * (v.t_new - v.t),
                          std::sqrt(n2), mis, was_below, joined});
    if (joined) member_[k] = best;
  }

  // Proposition 1 on the state W at t; refreshes the side of delta1 of every column.
  void check(double t, const Mat& W) {
    checks_ += 1;
    const Index r = U_.cols(), m = W.cols();
    const double d1sq = p_.delta1 * p_.delta1;
    Vec &ahat = ahat_, &mis_sum = mis_sum_;  // members: no allocation per accepted step
    ahat.setZero(r);
    mis_sum.setZero(r);
    std::vector<char>& nonempty = nonempty_;
    nonempty.assign(r, 0);
    for (Index k = 0; k < m; ++k) {
      const double n2 = W.col(k).squaredNorm();
      below_[k] = n2 < d1sq;
      const Index i = member_[k];
      if (i < 0) {
        margins_.update(4, p_.delta1 - std::sqrt(n2), t);
        continue;
      }
      const double mis = n2 > 0 ? misalignment(W.col(k).data(), i, n2) : 1.0;
      margins_.update(0, p_.alpha - mis, t);
      ahat[i] += n2;
      mis_sum[i] += n2 * mis;
      nonempty[i] = 1;
    }
    for (Index i = 0; i < r; ++i) {
      if (nonempty[i]) {
        const double mean = ahat[i] > 0 ? mis_sum[i] / ahat[i] : 1.0;
        margins_.update(1, p_.alpha * p_.alpha + 4.0 * p_.slack - mean, t);
      }
      const double gap = a_[i] - ahat[i];
      margins_.update(2, gap - (p_.lam / 6.0 - p_.slack), t);
      if (a_[i] >= p_.big) margins_.update(3, p_.lam + p_.slack - gap, t);
    }
  }

  const Mat& U_;
  bool basis_;
  Vec a_;
  Prop1Params p_;
  std::vector<Index> member_;
  std::vector<char> below_;  // ||w_k|| < delta1 at the last accepted state
  std::vector<Crossing> crossings_;
  Prop1Margins margins_;
  long checks_ = 0;
  Vec ahat_, mis_sum_;           // check()'s scratch: sum ||w_k||^2 and of ||w_k||^2 (1 - wbar_i^2)
  std::vector<char> nonempty_;   // per direction
  Vec column_;                   // locate()'s point on the continuous extension
};

// A tick for the steppers that hands every accepted step to watch.step, then runs tick(t).
template <class Watch, class Tick>
struct WatchedTick {
  Watch& watch;
  Tick& tick;
  void step(const StepView& v) { watch.step(v); }
  bool operator()(double t) { return tick(t); }
};

}  // namespace tdflow
