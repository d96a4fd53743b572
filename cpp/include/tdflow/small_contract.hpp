// contract() of cp_tensor.hpp for small dimension d (<= kSmallMaxDim): no GEMM. At d ~ 10 a
// Gram block's GEMMs spend more on packing and set-up than on arithmetic (d = 10, m = 50: ~10 us
// per right-hand side for ~2 us of flops). Here a lane of columns v_j (one SIMD register wide)
// is held transposed, and for every component z_k the lane's Gram entries <z_k, v_j>, their
// power and the output update out_j += c_k <z_k, v_j>^q z_k are formed in registers: 4 k d flops
// per column, as contract(), with no heap allocation and no intermediate Gram matrix. Every column
// is computed by the same operations in the same order whatever the block or lane it sits in, so
// results do not depend on the thread count; they differ from the GEMM path by rounding only.
#pragma once

#include <Eigen/Dense>

#include <algorithm>
#include <array>
#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "cp_tensor.hpp"
#include "threads.hpp"

namespace tdflow {

constexpr int kSmallMaxDim = 16;

namespace detail {

constexpr int kLane = Eigen::internal::packet_traits<double>::size;
using Lane = Eigen::Array<double, kLane, 1>;

// x^P (P >= 1 at compile time; P <= 0: p >= 1 read at run time)
template <int P>
inline Lane lane_pow(const Lane& x, int p) {
  if constexpr (P >= 1) {
    Lane r = x;
    for (int i = 1; i < P; ++i) r = r * x;
    return r;
  } else {
    Lane r = x, b = x;
    for (int e = p - 1; e > 0; e >>= 1) {
      if (e & 1) r = r * b;
      b = b * b;
    }
    return r;
  }
}

// <z, v_j> for the lane's columns (z: D entries): two chains, half the FMA latency.
template <int D>
inline Lane lane_dot(const Lane* v, const double* z) {
  Lane g0 = v[0] * z[0], g1 = Lane::Zero();
  for (int i = 1; i + 1 < D; i += 2) {
    g0 += v[i] * z[i];
    g1 += v[i + 1] * z[i + 1];
  }
  if (D % 2 == 0) g1 += v[D - 1] * z[D - 1];
  return g0 + g1;
}

// The lane of columns [j0, j0 + nj) (nj <= kLane) of V (d = D rows): v[i] holds row i of the
// lane (zero past nj). Scatter: acc[i] receives row i of sum_parts sum_k c_k <z_k, v_j>^p z_k
// (contract()); otherwise acc[0] receives sum_parts sum_k c_k <z_k, v_j>^p (evaluate()).
template <int D, int P, bool Scatter, class PartList>
inline void small_lane(const PartList& parts, const Lane* v, int p, Lane* acc) {
  for (int i = 0; i < (Scatter ? D : 1); ++i) acc[i].setZero();
  for (const auto& part : parts) {
    const Index k = part.rank();
    const double* c = part.c.data();
    if (part.basis) {  // z_k = e_k (k <= d): the Gram entries are row k of the lane
      for (Index kk = 0; kk < k; ++kk) acc[Scatter ? kk : 0] += c[kk] * lane_pow<P>(v[kk], p);
      continue;
    }
    const double* z = part.Z.data();
    for (Index kk = 0; kk < k; ++kk, z += D) {
      const Lane h = c[kk] * lane_pow<P>(lane_dot<D>(v, z), p);
      if constexpr (Scatter) {
        for (int i = 0; i < D; ++i) acc[i] += h * z[i];
      } else {
        acc[0] += h;
      }
    }
  }
}

// Rows of the lane [j0, j0 + nj) of a d x m column-major X (d = D, columns ld apart) into x
// (zero past nj).
template <int D>
inline void load_lane(const double* X, Index ld, Index j0, Index nj, Lane* x) {
  alignas(64) double t[D * kLane];
  for (Index jj = 0; jj < kLane; ++jj)
    for (int i = 0; i < D; ++i) t[i * kLane + jj] = jj < nj ? X[(j0 + jj) * ld + i] : 0.0;
  for (int i = 0; i < D; ++i) x[i] = Eigen::Map<const Lane>(t + i * kLane);
}

// The lane x back into the columns [j0, j0 + nj) of a d x m column-major X.
template <int D>
inline void store_lane(const Lane* x, Index j0, Index nj, double* X) {
  alignas(64) double t[D * kLane];
  for (int i = 0; i < D; ++i) Eigen::Map<Lane>(t + i * kLane) = x[i];
  for (Index jj = 0; jj < nj; ++jj)
    for (int i = 0; i < D; ++i) X[(j0 + jj) * D + i] = t[i * kLane + jj];
}

// For every lane of V (column-major, d = D rows, m columns), small_lane, then
// finish(acc, v, j0, nj); lanes in blocks of about kColBlock columns, in parallel for large work.
template <int D, int P, bool Scatter, class PartList, class Finish>
void small_lanes(const PartList& parts, const double* V, Index m, int p, Finish& finish) {
  const Index n_lanes = (m + kLane - 1) / kLane;
  const double work = (Scatter ? 2.0 : 1.0) * D * static_cast<double>(m) * total_rank(parts);
  const Index per_block = std::max<Index>(1, kColBlock / kLane);
  parallel_blocks((n_lanes + per_block - 1) / per_block, work, [&](Index b) {
    const Index l1 = std::min(n_lanes, (b + 1) * per_block);
    for (Index lane = b * per_block; lane < l1; ++lane) {
      const Index j0 = lane * kLane, nj = std::min<Index>(kLane, m - j0);
      Lane v[D], acc[D];
      load_lane<D>(V, D, j0, nj, v);
      small_lane<D, P, Scatter>(parts, v, p, acc);
      finish(std::integral_constant<int, D>{}, static_cast<const Lane*>(acc),
             static_cast<const Lane*>(v), j0, nj);
    }
  });
}

template <int D, bool Scatter, class PartList, class Finish>
void small_lanes_q(const PartList& parts, const double* V, Index m, int q, Finish& finish) {
  switch (q) {
    case 2: return small_lanes<D, 2, Scatter>(parts, V, m, q, finish);
    case 3: return small_lanes<D, 3, Scatter>(parts, V, m, q, finish);
    case 4: return small_lanes<D, 4, Scatter>(parts, V, m, q, finish);
    case 5: return small_lanes<D, 5, Scatter>(parts, V, m, q, finish);
    default: return small_lanes<D, 0, Scatter>(parts, V, m, q, finish);
  }
}

}  // namespace detail

// Whether the functions below serve V with d rows and the power q.
inline bool small_fits(Index d, int q) { return d >= 1 && d <= kSmallMaxDim && q >= 1; }

// For every lane of columns of V (d x m, column-major, small_fits(d, q)): the lane's
// contraction acc (Scatter, as contract(): acc[i] = row i of out; else as evaluate(): acc[0]),
// then finish(std::integral_constant<int, d>, acc, v, j0, nj), v the lane of V (both kLane
// columns, zero past nj). A finish that only reads its lane and writes columns [j0, j0 + nj) of
// its outputs may run in parallel.
template <bool Scatter = true, class PartList, class Finish>
void small_apply(const PartList& parts, const double* V, Index d, Index m, int q, Finish&& finish) {
  switch (d) {
#define TDFLOW_SMALL_DIM(n) \
  case n: detail::small_lanes_q<n, Scatter>(parts, V, m, q, finish); break;
    TDFLOW_SMALL_DIM(1) TDFLOW_SMALL_DIM(2) TDFLOW_SMALL_DIM(3) TDFLOW_SMALL_DIM(4)
    TDFLOW_SMALL_DIM(5) TDFLOW_SMALL_DIM(6) TDFLOW_SMALL_DIM(7) TDFLOW_SMALL_DIM(8)
    TDFLOW_SMALL_DIM(9) TDFLOW_SMALL_DIM(10) TDFLOW_SMALL_DIM(11) TDFLOW_SMALL_DIM(12)
    TDFLOW_SMALL_DIM(13) TDFLOW_SMALL_DIM(14) TDFLOW_SMALL_DIM(15) TDFLOW_SMALL_DIM(16)
#undef TDFLOW_SMALL_DIM
    default: throw std::invalid_argument("small_apply: d = " + std::to_string(d) + " > " +
                                         std::to_string(kSmallMaxDim));
  }
}

// out(:, j) = sum_parts sum_k c_k <z_k, v_j>^q z_k, as contract(), when small_fits(d, q) and V
// is contiguous; returns false (out untouched) otherwise.
template <class PartList>
bool small_contract(const PartList& parts, const Eigen::Ref<const Mat>& V, int q, Mat& out) {
  const Index d = V.rows(), m = V.cols();
  if (!small_fits(d, q) || V.outerStride() != d) return false;
  out.resize(d, m);
  small_apply(parts, V.data(), d, m, q,
              [&](auto D, const detail::Lane* acc, const detail::Lane*, Index j0, Index nj) {
                detail::store_lane<decltype(D)::value>(acc, j0, nj, out.data());
              });
  return true;
}

// out(j) = sum_parts sum_k c_k <z_k, v_j>^l = T(v_j^l), as evaluate(), when small_fits(d, l) and
// V is contiguous; returns false (out untouched) otherwise.
template <class PartList>
bool small_evaluate(const PartList& parts, const Eigen::Ref<const Mat>& V, int l, Vec& out) {
  const Index d = V.rows(), m = V.cols();
  if (!small_fits(d, l) || V.outerStride() != d) return false;
  out.resize(m);
  small_apply<false>(parts, V.data(), d, m, l,
                     [&](auto, const detail::Lane* acc, const detail::Lane*, Index j0, Index nj) {
                       for (Index jj = 0; jj < nj; ++jj) out[j0 + jj] = acc[0][jj];
                     });
  return true;
}

namespace detail {

// sum_{j, k} c_j c_k <z_j, z_k>^P over the columns of Z (d = D rows, k columns), with the
// symmetry of the Gram matrix: lane J meets only the components from its own first column on,
// those past the lane twice, those inside it by a mask (twice above the diagonal, once on it, not
// below). Per-lane sums land in lane_sums and are added in order: no dependence on threads.
template <int D, int P>
double small_self_lanes(const double* Z, const double* c, Index k, int p, Vec& lane_sums) {
  const Index n_lanes = (k + kLane - 1) / kLane;
  lane_sums.resize(n_lanes);
  const Index per_block = std::max<Index>(1, kColBlock / kLane);
  const double work = 0.5 * D * static_cast<double>(k) * static_cast<double>(k);
  parallel_blocks((n_lanes + per_block - 1) / per_block, work, [&](Index b) {
    const Index l1 = std::min(n_lanes, (b + 1) * per_block);
    for (Index lane = b * per_block; lane < l1; ++lane) {
      const Index j0 = lane * kLane, nj = std::min<Index>(kLane, k - j0);
      Lane v[D], cl;
      load_lane<D>(Z, D, j0, nj, v);
      load_lane<1>(c, 1, j0, nj, &cl);
      Lane diag = Lane::Zero(), off = Lane::Zero();
      const double* z = Z + j0 * D;
      for (Index kk = j0; kk < k; ++kk, z += D) {
        const Lane h = c[kk] * lane_pow<P>(lane_dot<D>(v, z), p);
        if (kk < j0 + nj) {
          Lane mask;
          for (int jj = 0; jj < kLane; ++jj) mask[jj] = kk - j0 > jj ? 2.0 : kk - j0 == jj ? 1.0 : 0.0;
          diag += mask * h;
        } else {
          off += h;
        }
      }
      lane_sums[lane] = (cl * (diag + 2.0 * off)).sum();
    }
  });
  return lane_sums.sum();
}

template <int D>
double small_self_q(const double* Z, const double* c, Index k, int q, Vec& lane_sums) {
  switch (q) {
    case 3: return small_self_lanes<D, 3>(Z, c, k, q, lane_sums);
    case 4: return small_self_lanes<D, 4>(Z, c, k, q, lane_sums);
    case 5: return small_self_lanes<D, 5>(Z, c, k, q, lane_sums);
    case 6: return small_self_lanes<D, 6>(Z, c, k, q, lane_sums);
    default: return small_self_lanes<D, 0>(Z, c, k, q, lane_sums);
  }
}

}  // namespace detail

// <P, P> = sum_{j, k} c_j c_k <z_j, z_k>^l for one part, as self_inner() (half the Gram matrix),
// in registers, when small_fits(d, l) and Z is contiguous; returns false otherwise.
inline bool small_self_inner(const Part& part, int l, Vec& scratch, double& out) {
  const Index d = part.Z.rows(), k = part.rank();
  if (!small_fits(d, l) || part.Z.outerStride() != d) return false;
  if (k == 0 || part.basis) {
    out = part.c.squaredNorm();  // orthonormal components (or none)
    return true;
  }
  switch (d) {
#define TDFLOW_SMALL_DIM(n) \
  case n: out = detail::small_self_q<n>(part.Z.data(), part.c.data(), k, l, scratch); break;
    TDFLOW_SMALL_DIM(1) TDFLOW_SMALL_DIM(2) TDFLOW_SMALL_DIM(3) TDFLOW_SMALL_DIM(4)
    TDFLOW_SMALL_DIM(5) TDFLOW_SMALL_DIM(6) TDFLOW_SMALL_DIM(7) TDFLOW_SMALL_DIM(8)
    TDFLOW_SMALL_DIM(9) TDFLOW_SMALL_DIM(10) TDFLOW_SMALL_DIM(11) TDFLOW_SMALL_DIM(12)
    TDFLOW_SMALL_DIM(13) TDFLOW_SMALL_DIM(14) TDFLOW_SMALL_DIM(15) TDFLOW_SMALL_DIM(16)
#undef TDFLOW_SMALL_DIM
  }
  return true;
}

// ||T||_F^2 = sum_a <P_a, P_a> + 2 sum_{a<b} <P_a, P_b>, as norm_squared() (clamped at 0), when
// small_fits(d, l): each part's own Gram matrix by halves (small_self_inner), the cross terms as
// sum_j c_j T_b(z_j^l) over the smaller part's columns. Returns false otherwise.
template <class PartList>
bool small_norm_squared(const PartList& parts, int l, Vec& scratch, double& out) {
  double v = 0.0;
  for (size_t a = 0; a < parts.size(); ++a) {
    double self;
    if (!small_self_inner(parts[a], l, scratch, self)) return false;
    v += self;
    for (size_t b = a + 1; b < parts.size(); ++b) {
      const bool a_smaller = parts[a].rank() <= parts[b].rank();
      const Part& cols = a_smaller ? parts[a] : parts[b];
      const Part& comps = a_smaller ? parts[b] : parts[a];
      if (cols.rank() == 0 || comps.rank() == 0) continue;
      if (!small_evaluate(std::array<Part, 1>{comps}, cols.Z, l, scratch)) return false;
      v += 2.0 * scratch.dot(cols.c);
    }
  }
  out = std::isfinite(v) ? std::max(v, 0.0) : v;
  return true;
}

}  // namespace tdflow
