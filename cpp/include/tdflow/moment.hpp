// Contractions of a symmetric CP tensor R = sum_j c_j z_j^{(x)l} through its moment tensor, in
// O(k d^l) time instead of the Gram path's O(k m d) (cp_tensor.hpp): the path for m >> d^{l-1}.
//
// The d^{l-1} x d unfolding of R, M(a, i) = sum_j c_j z_j^a z_j[i] (a a multi-index of length
// q = l-1, z^a = z[a_1] ... z[a_q]), has equal rows for permuted multi-indices, so only the
// C(d+q-1, q) sorted ones a_1 <= ... <= a_q are stored (the "monomials" of degree q; 220 rows
// against 1000 at d = 10, l = 4). With K(V) the monomials of the columns of V (one row each) and
// mult(a) = q! / prod(counts!) the number of multi-indices a row stands for:
//   M = K(Z) diag(c) Z^T                        (one GEMM, inner dimension k)
//   R(v^{l-1}, I) = sum_a mult(a) v^a M(a, :)   (one GEMM, inner dimension C(d+q-1, q))
//   ||R||_F^2 = sum_a mult(a) ||M(a, :)||^2.
// The norm is a sum of squares of computed entries, accurate to rounding near R = 0, unlike the
// Gram form sum c c' <z, z'>^l (norm_squared), whose cancellation leaves a floor of about
// sqrt(l eps) ||T*||_F on ||R||_F.
//
// Memory is O(C(d+q-1, q) d) for M plus one block of monomials per thread: columns are handled
// in blocks and no monomial matrix of all m columns is formed. Work is split into tasks whose
// boundaries depend on the sizes only, each entry of a result written by one task in a fixed
// order, so results do not depend on the thread count.
#pragma once

#include <Eigen/Dense>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <stdexcept>
#include <vector>

#include "cp_tensor.hpp"
#include "small_contract.hpp"
#include "threads.hpp"

namespace tdflow {

using RowMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// C(d+q-1, q), the number of monomials of degree q in d variables (a double: it may be huge).
inline double n_monomials(double d, int q) {
  double n = 1.0;
  for (int k = 1; k <= q; ++k) n = n * (d + k - 1) / k;
  return n;
}

// The monomials of degrees 0..q in d variables, numbered consecutively level after level (entry
// 0 is the empty monomial; level k lists the sorted tuples of length k in lexicographic order).
// Entry e >= 1 is its parent (the tuple without its last index) times one variable, so a row of
// monomials for a block of columns is one elementwise product of two earlier rows.
class MonomialTable {
 public:
  MonomialTable(Index d, int q) : d_(d) {
    if (d < 1 || q < 1) throw std::invalid_argument("MonomialTable needs d >= 1 and q >= 1");
    if (n_monomials(static_cast<double>(d), q) * 4 > 2147483647.0)
      throw std::length_error("the moment tensor has too many entries for d = " +
                              std::to_string(d) + ", order " + std::to_string(q + 1));
    // per entry during the build: its last index and how often that index ends the tuple
    std::vector<int32_t> last{0}, run{0};
    std::vector<double> mult{1.0};
    src_.push_back(0);
    var_.push_back(0);
    Index begin = 0, end = 1;  // the previous level
    for (int k = 1; k <= q; ++k) {
      for (Index p = begin; p < end; ++p) {
        for (Index v = (k == 1 ? 0 : last[p]); v < d; ++v) {
          const int32_t r = (k > 1 && v == last[p]) ? run[p] + 1 : 1;
          src_.push_back(static_cast<int32_t>(p));
          var_.push_back(static_cast<int32_t>(v));
          last.push_back(static_cast<int32_t>(v));
          run.push_back(r);
          mult.push_back(mult[p] * k / r);  // multinomial q!/prod(counts!), built up
        }
      }
      begin = end;
      end = static_cast<Index>(src_.size());
    }
    top_ = begin;
    mult_ = Vec::Map(mult.data() + top_, end - top_);
  }

  Index dim() const { return d_; }
  Index size() const { return static_cast<Index>(src_.size()); }  // entries of all levels
  Index top_begin() const { return top_; }                        // first entry of degree q
  Index top_size() const { return size() - top_; }
  const Vec& mult() const { return mult_; }

  // K(e, :) for the columns of X (d x b, row-major): every entry below degree q, and the degree-q
  // entries [lo, hi) (numbered within the level). K has size() rows and >= b columns.
  void fill(const RowMat& X, Index b, Index lo, Index hi, RowMat& K) const {
    const Index ld = K.cols(), lx = X.cols();
    double* k = K.data();
    std::fill(k, k + b, 1.0);
    auto row = [&](Index e) {
      double* out = k + e * ld;
      const double* a = k + src_[e] * ld;
      const double* x = X.data() + var_[e] * lx;
      for (Index j = 0; j < b; ++j) out[j] = a[j] * x[j];
    };
    for (Index e = 1; e < top_; ++e) row(e);
    for (Index e = top_ + lo; e < top_ + hi; ++e) row(e);
  }

 private:
  Index d_;
  std::vector<int32_t> src_, var_;
  Index top_ = 0;
  Vec mult_;
};

namespace detail {

// Columns per block of monomials: the block of all levels (size() x b doubles) stays within
// 256 KiB, a quarter of this machine's per-core L2. Measured (one core, AMD EPYC, AVX-512):
// both GEMMs ran at 26-37 GFLOP/s for b = 32..256 at d = 10..20, l = 4..5, and lost a third
// from b = 512 on at d = 10, l = 4.
inline Index moment_col_block(const MonomialTable& tab) {
  const Index b = (Index{1} << 15) / std::max<Index>(1, tab.size());
  return std::min<Index>(256, std::max<Index>(16, b / 8 * 8));
}

constexpr Index kMomentRowBlock = 128;  // degree-q rows of M per build task
constexpr Index kMomentChunk = 4096;    // columns per build task (partial sums added in order)
constexpr int kMomentMaxChunks = 8;

// Per-thread scratch, reused across calls (a block of monomials is too big to allocate per block).
struct MomentScratch {
  RowMat X, Xc, K;
  Mat PT;
};
inline MomentScratch& moment_scratch() {
  thread_local MomentScratch s;
  return s;
}

}  // namespace detail

// M (degree-q monomials x d) = sum_parts sum_j c_j z_j^a z_j^T, unscaled by mult.
inline void moment_unfolding(const MonomialTable& tab, const Parts& parts, Mat& M,
                             std::vector<Mat>& partial) {
  const Index d = tab.dim(), n = tab.top_size(), b = detail::moment_col_block(tab);
  const Index k_total = static_cast<Index>(detail::total_rank(parts));
  // tasks: row blocks of M x chunks of columns, fixed by the sizes alone
  const Index n_rows = (n + detail::kMomentRowBlock - 1) / detail::kMomentRowBlock;
  Index n_chunks = std::min<Index>(detail::kMomentMaxChunks, std::max<Index>(1, k_total / detail::kMomentChunk));
  while (n_chunks > 1 && static_cast<double>(n_chunks) * n * d > (1 << 22)) --n_chunks;  // <= 32 MiB
  M.resize(n, d);
  partial.resize(n_chunks - 1);
  for (Mat& P : partial) P.resize(n, d);
  const double work = 2.0 * static_cast<double>(k_total) * n * d;
  parallel_blocks(n_rows * n_chunks, work, [&](Index task) {
    const Index rb = task % n_rows, ch = task / n_rows;
    const Index a0 = rb * detail::kMomentRowBlock, na = std::min(detail::kMomentRowBlock, n - a0);
    const Index c0 = k_total * ch / n_chunks, c1 = k_total * (ch + 1) / n_chunks;
    auto Mr = (ch == 0 ? M : partial[ch - 1]).middleRows(a0, na);
    Mr.setZero();
    detail::MomentScratch& s = detail::moment_scratch();
    if (s.X.rows() != d || s.X.cols() != b) s.X.resize(d, b);
    if (s.K.rows() < tab.size() || s.K.cols() != b) s.K.resize(tab.size(), b);
    if (s.Xc.rows() != d || s.Xc.cols() != b) s.Xc.resize(d, b);
    Index offset = 0;  // first column of the part in the concatenation
    for (const Part& part : parts) {
      const Index lo = std::max(c0, offset), hi = std::min(c1, offset + part.rank());
      for (Index j0 = lo; j0 < hi; j0 += b) {
        const Index nj = std::min(b, hi - j0);
        s.X.leftCols(nj) = part.Z.middleCols(j0 - offset, nj);
        tab.fill(s.X, nj, a0, a0 + na, s.K);
        s.Xc.leftCols(nj) = s.X.leftCols(nj) * part.c.segment(j0 - offset, nj).asDiagonal();
        Mr.noalias() += s.K.block(tab.top_begin() + a0, 0, na, nj) * s.Xc.leftCols(nj).transpose();
      }
      offset += part.rank();
    }
  });
  for (const Mat& P : partial) M += P;  // in chunk order
}

// ||R||_F^2 = sum_a mult(a) ||M(a, :)||^2 for M from moment_unfolding.
inline double moment_norm_squared(const MonomialTable& tab, const Mat& M) {
  return M.rowwise().squaredNorm().dot(tab.mult());
}

// out(:, j) = R(v_j^{l-1}, I) for Mm = diag(mult) M.
template <class VType>
void moment_contract(const MonomialTable& tab, const Mat& Mm, const VType& V, Mat& out) {
  const Index d = V.rows(), m = V.cols(), n = tab.top_size(), b = detail::moment_col_block(tab);
  out.resize(d, m);
  const Index n_blocks = (m + b - 1) / b;
  parallel_blocks(n_blocks, 2.0 * static_cast<double>(m) * n * d, [&](Index jb) {
    const Index j0 = jb * b, nj = std::min(b, m - j0);
    detail::MomentScratch& s = detail::moment_scratch();
    if (s.X.rows() != d || s.X.cols() != b) s.X.resize(d, b);
    if (s.K.rows() < tab.size() || s.K.cols() != b) s.K.resize(tab.size(), b);
    s.X.leftCols(nj) = V.middleCols(j0, nj);
    tab.fill(s.X, nj, 0, n, s.K);
    // as out_J^T = K_J^T Mm: b rows in the GEMM's output instead of d (1.0-1.4x faster at d ~ 10)
    s.PT.noalias() = s.K.block(tab.top_begin(), 0, n, nj).transpose() * Mm;
    out.middleCols(j0, nj) = s.PT.transpose();
  });
}

// Which path contracts the residual: Auto chooses by ContractionCost at every evaluation.
enum class Contraction { Auto, Gram, Moment };

// Largest moment unfolding (monomials x d doubles) the Auto path builds: 256 MiB.
constexpr double kMomentMaxEntries = double(1 << 25);

// The table for order l, or null where Auto should never take the moment path (too large);
// a forced Moment path on a tensor that is too large is an error.
inline std::shared_ptr<const MonomialTable> moment_table(Index d, int l, Contraction c) {
  const double entries = n_monomials(static_cast<double>(d), l - 1) * d;
  if (entries > kMomentMaxEntries) {
    if (c == Contraction::Moment)
      throw std::invalid_argument("contraction='moment' needs a moment tensor of " +
                                  std::to_string(static_cast<long long>(entries)) +
                                  " entries at d = " + std::to_string(d) + ", order " +
                                  std::to_string(l) + " (at most 2^25 allowed): use 'gram'");
    return nullptr;
  }
  return std::make_shared<const MonomialTable>(d, l - 1);
}

// Estimated cost of one evaluation by each path, for Auto. d, order l, target rank r, m columns
// of which a are in the residual; n = C(d+l-2, l-1) monomials. COST MODEL CONSTANTS (the only
// place they live): each path's flops, the moment path's weighted by kMomentFlopCost (its GEMMs
// have other shapes and it forms the monomial rows) plus kMomentOverhead flop-equivalents
// (about 1 us: scratch set-up and the finishing passes over M).
// Measured (bench/bench_moment_regime.py --crossover, one thread, AMD EPYC, load ~6 on 2 cores):
// one dense RHS, Gram time / moment time = 1 at m ~ 1.4 n for (d, l) = (10..50, 3), (10, 4),
// (8, 5), (6, 6); ~2 n for (20, 4), (10, 5); ~2.8 n for (5, 3). The Gram path's dense RHS costs
// 4 (r + m) m d flops (m < kSelfMin; above, 3/4 of the model part's), the moment path's 2 (r + 2m) n d, so equal time at
// m ~ 1.4 n means kMomentFlopCost ~ 1.4; the overhead places the small cases.
// For d <= kSmallMaxDim the Gram path's dense RHS runs on the register kernels of
// small_contract.hpp, its flops weighted by kSmallGramFlopCost: measured (one thread, AMD EPYC,
// loaded machine) Gram time / moment time = 1 at m ~ 2 n for (d, l) = (10, 4), (8, 5) and ~2.5 n
// for (6, 6) — 0.72x the model without it —, at ~1.4 n for (16, 3) (1x).
struct ContractionCost {
  static constexpr double kMomentFlopCost = 1.4;
  static constexpr double kSmallGramFlopCost = 0.75;
  static constexpr double kMomentOverhead = 2.5e4;
  struct Costs {
    double gram, moment;
  };
  static double monomials(Index d, int l) { return n_monomials(static_cast<double>(d), l - 1); }
  static double moment(double flops) { return kMomentFlopCost * flops + kMomentOverhead; }

  // R(wbar^{l-1}, I) for all m columns
  static Costs rhs(Index d, int l, Index r, Index m, Index a) {
    const double D = d, M = m, A = a, R = r;
    const double gram = small_fits(d, l - 1) ? kSmallGramFlopCost * 4 * (R + A) * M * D
                        : a >= kSelfMin ? 4 * R * M * D + 3 * A * A * D + 4 * A * (M - A) * D
                                        : 4 * (R + A) * M * D;
    return {gram, moment(2 * (R + A + M) * monomials(d, l) * D)};
  }
  // ||R||_F^2
  static Costs norm(Index d, int l, Index r, Index a) {
    const double D = d, A = a, R = r;
    return {(A * A + 2 * R * A + R * R) * D, moment(2 * (R + A) * monomials(d, l) * D)};
  }
  // R(u_i^l) for the r target directions
  static Costs directional(Index d, int l, Index r, Index a) {
    const double D = d, A = a, R = r;
    return {2 * R * (R + A) * D, moment(2 * (2 * R + A) * monomials(d, l) * D)};
  }
};

}  // namespace tdflow
