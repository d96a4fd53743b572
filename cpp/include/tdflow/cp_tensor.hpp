// Symmetric CP tensors T = sum_j c_j z_j^{(x)l}, handled only through Gram matrices: a d^l
// array is never formed. A tensor is a list of parts (Z, c), so that a residual T* - T is
// the concatenation of the target's and the model's parts without copying either.
//
// Batched over the columns v of V, every contraction is  Z * (c o f(Z^T V))  for an
// elementwise f, computed block by block: a Gram block of kRowBlock x kColBlock entries is
// formed by a GEMM, f is applied while it is in cache, and a second GEMM accumulates it into
// the output. Peak workspace is one block per thread, never an m x m matrix.
#pragma once

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <utility>
#include <vector>

#include "threads.hpp"

namespace tdflow {

using Index = Eigen::Index;
using Mat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
using Vec = Eigen::VectorXd;
using MatMap = Eigen::Map<const Mat>;
using VecMap = Eigen::Map<const Vec>;

// Block sizes (overridable at compile time): a 1024 x 256 Gram block (2 MiB) amortises the
// packing of both GEMMs; measured on a 2-core AVX-512 machine, 1024 x 256 reached 40 GFLOP/s on
// one core against 28 for 256 x 128 (d = 100, m = 4000).
#ifndef TDFLOW_ROW_BLOCK
#define TDFLOW_ROW_BLOCK 1024
#endif
#ifndef TDFLOW_COL_BLOCK
#define TDFLOW_COL_BLOCK 256
#endif
#ifndef TDFLOW_SELF_BLOCK
#define TDFLOW_SELF_BLOCK 320
#endif
constexpr Index kRowBlock = TDFLOW_ROW_BLOCK;
constexpr Index kColBlock = TDFLOW_COL_BLOCK;
constexpr Index kSelfBlock = TDFLOW_SELF_BLOCK;  // about the edge of contract_self_add's blocks

// One part of a CP tensor: components Z (d x k, columns z_j) with coefficients c (k).
// `basis` marks Z = the first k standard basis vectors, whose Gram rows are just rows of V.
struct Part {
  MatMap Z;
  VecMap c;
  bool basis = false;

  Part(const double* z, Index d, Index k, const double* coef, bool is_basis = false)
      : Z(z, d, k), c(coef, k), basis(is_basis) {}
  Part(const Mat& z, const Vec& coef, bool is_basis = false)
      : Z(z.data(), z.rows(), z.cols()), c(coef.data(), coef.size()), basis(is_basis) {}
  Index rank() const { return Z.cols(); }
};

using Parts = std::vector<Part>;

// x^P for a compile-time P (P < 0: the exponent is read at run time).
template <int P>
struct Power {
  int p = P;
  double operator()(double x) const {
    if constexpr (P >= 0) {
      double r = 1.0;
      for (int i = 0; i < P; ++i) r *= x;  // unrolled by the compiler
      return r;
    } else {
      double r = 1.0, b = x;
      for (int e = p; e > 0; e >>= 1) {
        if (e & 1) r *= b;
        b *= b;
      }
      return r;
    }
  }
};

// Calls f(Power<P>{}) with P = p for the common orders, a run-time Power otherwise.
template <class F>
decltype(auto) with_power(int p, F&& f) {
  switch (p) {
    case 1: return f(Power<1>{});
    case 2: return f(Power<2>{});
    case 3: return f(Power<3>{});
    case 4: return f(Power<4>{});
    case 5: return f(Power<5>{});
    case 6: return f(Power<6>{});
    default: {
      Power<-1> pw;
      pw.p = p;
      return f(pw);
    }
  }
}

namespace detail {

// G = G^p entry by entry (a loop without reduction: it vectorises for a compile-time p)
template <class Pw>
inline void power_in_place(const Pw& pw, Mat& G) {
  double* g = G.data();
  const Index n = G.size();
  for (Index i = 0; i < n; ++i) g[i] = pw(g[i]);
}

// G = Z_K^T V_J for the rows [k0, k0+nk) of a part.
template <class VBlock>
inline void gram_block(const Part& part, Index k0, Index nk, const VBlock& VJ, Mat& G) {
  if (part.basis) {
    G = VJ.middleRows(k0, nk);
  } else {
    G.noalias() = part.Z.middleCols(k0, nk).transpose() * VJ;
  }
}

// out_J += Z_K * G
template <class OBlock>
inline void scatter_block(const Part& part, Index k0, Index nk, const Mat& G, OBlock& outJ) {
  if (part.basis) {
    outJ.middleRows(k0, nk) += G;
  } else {
    outJ.noalias() += part.Z.middleCols(k0, nk) * G;
  }
}

inline Index n_col_blocks(Index m) { return (m + kColBlock - 1) / kColBlock; }

template <class PartList>
double total_rank(const PartList& parts) {
  double k = 0;
  for (const auto& p : parts) k += static_cast<double>(p.rank());
  return k;
}

// The loop contract, contract_mixed and evaluate share: for every block J of kColBlock columns
// of V (in parallel; start(j0, nj) prepares the block's output and returns its visitor) and
// every block K of kRowBlock components of each part, G = Z_K^T V_J, then
// visit(pw, part, k0, nk, G) with pw the power q. `flops` per component, column and row sets
// the work that decides whether to run in parallel.
template <class VType, class Start>
void for_gram_blocks(const Parts& parts, const VType& V, int q, double flops, Start&& start) {
  const Index d = V.rows(), m = V.cols();
  const double work = flops * total_rank(parts) * static_cast<double>(m) * d;
  with_power(q, [&](auto pw) {
    parallel_blocks(n_col_blocks(m), work, [&](Index b) {
      const Index j0 = b * kColBlock, nj = std::min(kColBlock, m - j0);
      const auto VJ = V.middleCols(j0, nj);
      auto visit = start(j0, nj);
      Mat G;
      for (const Part& part : parts) {
        for (Index k0 = 0; k0 < part.rank(); k0 += kRowBlock) {
          const Index nk = std::min(kRowBlock, part.rank() - k0);
          gram_block(part, k0, nk, VJ, G);
          visit(pw, part, k0, nk, G);
        }
      }
    });
  });
}

}  // namespace detail

// out(:, j) = sum_parts sum_k c_k <z_k, v_j>^q z_k.   With q = l-1 this is T(v^{l-1}, I).
template <class VType>
void contract(const Parts& parts, const VType& V, int q, Mat& out) {
  out.resize(V.rows(), V.cols());
  detail::for_gram_blocks(parts, V, q, 2.0, [&](Index j0, Index nj) {
    auto outJ = out.middleCols(j0, nj);
    outJ.setZero();
    return [outJ, nj](auto pw, const Part& part, Index k0, Index nk, Mat& G) mutable {
      const double* c = part.c.data() + k0;
      for (Index jj = 0; jj < nj; ++jj) {
        double* g = G.col(jj).data();
        for (Index kk = 0; kk < nk; ++kk) g[kk] = c[kk] * pw(g[kk]);
      }
      detail::scatter_block(part, k0, nk, G, outJ);
    };
  });
}

namespace detail {

// Edge of contract_self_add's square blocks for k columns: about kSelfBlock, adjusted to aim at
// a number of blocks that is a multiple of 4 (every round then has an even number of pairs,
// which 2 or 4 threads share evenly) and the edge is a multiple of 8 but not a power of two (a
// power-of-two leading dimension made the GEMM packing thrash the cache: 373 against 265 ms per
// RHS at d = 100, m = 8000). Depends on k only, so results do not depend on the thread count.
inline Index self_block(Index k) {
  Index nb = std::max<Index>(1, (k + kSelfBlock / 2) / kSelfBlock);
  if (nb >= 4) nb = (nb + 3) / 4 * 4;
  Index b = ((k + nb - 1) / nb + 7) / 8 * 8;
  if ((b & (b - 1)) == 0) b += 8;
  return b;
}

// Round-robin ("circle method") schedule over nb blocks: every pair K < J meets in exactly one
// round and no block appears twice in a round, so the pairs of a round can update their two
// output blocks in parallel while each output block still receives its terms in a fixed order.
inline std::vector<std::vector<std::pair<Index, Index>>> pair_rounds(Index nb) {
  std::vector<std::vector<std::pair<Index, Index>>> rounds;
  if (nb < 2) return rounds;
  const Index n = nb % 2 == 0 ? nb : nb + 1;  // block n-1 is a bye when nb is odd
  for (Index r = 0; r < n - 1; ++r) {
    std::vector<std::pair<Index, Index>> round;
    for (Index i = 0; i < n / 2; ++i) {
      Index a = (r + i) % (n - 1), b = i == 0 ? n - 1 : (r + n - 1 - i) % (n - 1);
      if (a >= nb || b >= nb) continue;
      if (a > b) std::swap(a, b);
      round.emplace_back(a, b);
    }
    rounds.push_back(std::move(round));
  }
  return rounds;
}

// Runs diag(b) for every block b, then pair(K, J) for the pairs of pair_rounds(nb), round after
// round, so that every block receives its updates in that fixed order whatever the threads. In
// parallel, as OpenMP tasks that depend on the blocks they write: no barrier between rounds, so
// a thread the OS deschedules (another busy process on the core) holds up only the tasks that
// need its blocks — with a parallel loop per round, each round waited for it (2 threads / 1
// thread 1.12x on one dense RHS at d = 50, m = 2000 beside two busy processes). Before OpenMP 4
// (no task dependences), one parallel loop per round.
template <class Diag, class Pair>
void self_schedule(Index nb, double work, Diag& diag, Pair& pair) {
  const auto rounds = pair_rounds(nb);
#ifdef _OPENMP
  if (nb > 1 && work >= kParallelMinWork && !omp_in_parallel() && max_threads() > 1) {
#if _OPENMP >= 201307
    std::vector<char> deps(nb);
    char* dep = deps.data();
#pragma omp parallel num_threads(max_threads())
#pragma omp single
    {
      for (Index b = 0; b < nb; ++b) {
#pragma omp task depend(inout : dep[b]) firstprivate(b)
        diag(b);
      }
      for (const auto& round : rounds) {
        for (const auto& kj : round) {
          const Index kb = kj.first, jb = kj.second;
#pragma omp task depend(inout : dep[kb], dep[jb]) firstprivate(kb, jb)
          pair(kb, jb);
        }
      }
    }
#else
    parallel_blocks(nb, work, diag);
    for (const auto& round : rounds)
      parallel_blocks(static_cast<Index>(round.size()), work,
                      [&](Index p) { pair(round[p].first, round[p].second); });
#endif
    return;
  }
#endif
  for (Index b = 0; b < nb; ++b) diag(b);
  for (const auto& round : rounds)
    for (const auto& kj : round) pair(kj.first, kj.second);
}

}  // namespace detail

// out(:, j) += sum_k c_k <z_k, z_j>^q z_k for the columns z_j of the part itself: contract(),
// using the symmetry of its Gram matrix. Z diag(c) (d x k) is formed once; each pair of column
// blocks (K, J), K < J, forms G = Z_K^T Z_J once and feeds both out_J += (Z diag c)_K G^q and
// out_K += (Z diag c)_J (G^q)^T; diagonal blocks form only their lower triangle. 3/4 of the
// flops of contract(), the same O(k d) memory and a result independent of the thread count.
// Measured against contract() (AMD EPYC, 2 cores, EIGEN_DONT_PARALLELIZE as in the build; min of
// 9 alternating rounds, q = 3): time ratio 0.72-0.83 on two threads and 0.73-0.86 on one for
// d = 20..100, k = 1280..3072 (d = 50, k = 2000: 0.74 / 0.75); at k = 1024 0.93-1.14 on two
// threads, at k = 500-768 0.68-1.0. Callers keep contract() below kSelfMin columns. (An earlier
// measurement on a loaded machine had put the two-thread crossover near k = 4000.)
constexpr Index kSelfMin = 1200;
inline void contract_self_add(const Part& part, int q, Mat& out) {
  const Index d = part.Z.rows(), k = part.rank();
  if (k == 0) return;
  const Index kB = detail::self_block(k);
  const Index nb = (k + kB - 1) / kB;
  Mat Zc(d, k);
  parallel_blocks(nb, 1.0 * d * k, [&](Index b) {
    const Index j0 = b * kB, nj = std::min(kB, k - j0);
    Zc.middleCols(j0, nj) = part.Z.middleCols(j0, nj) * part.c.segment(j0, nj).asDiagonal();
  });
  auto block = [&](Index b) { return std::make_pair(b * kB, std::min(kB, k - b * kB)); };
  with_power(q, [&](auto pw) {
    auto diag = [&](Index b) {
      const auto [j0, nj] = block(b);
      Mat G(nj, nj);
      const auto ZJ = part.Z.middleCols(j0, nj);
      G.triangularView<Eigen::Lower>() = ZJ.transpose() * ZJ;
      for (Index jj = 0; jj < nj; ++jj) {
        double* g = G.col(jj).data();
        for (Index kk = jj; kk < nj; ++kk) g[kk] = pw(g[kk]);
      }
      G.triangularView<Eigen::StrictlyUpper>() = G.transpose();
      out.middleCols(j0, nj).noalias() += Zc.middleCols(j0, nj) * G;
    };
    auto pair = [&](Index kb, Index jb) {
      const auto [k0, nk] = block(kb);
      const auto [j0, nj] = block(jb);
      Mat G(nk, nj);
      G.noalias() = part.Z.middleCols(k0, nk).transpose() * part.Z.middleCols(j0, nj);
      detail::power_in_place(pw, G);
      out.middleCols(j0, nj).noalias() += Zc.middleCols(k0, nk) * G;
      out.middleCols(k0, nk).noalias() += Zc.middleCols(j0, nj) * G.transpose();
    };
    const double work = 1.5 * static_cast<double>(kB) * kB * d * nb * nb;
    detail::self_schedule(nb, work, diag, pair);
  });
}

// out(:, j) = sum_parts sum_k c_k <z_k, v_j>^q <z_k, u_j> z_k.  With q = l-2: T(v^{l-2}, u, I).
template <class VType, class UType>
void contract_mixed(const Parts& parts, const VType& V, const UType& U, int q, Mat& out) {
  out.resize(V.rows(), V.cols());
  detail::for_gram_blocks(parts, V, q, 3.0, [&](Index j0, Index nj) {
    auto outJ = out.middleCols(j0, nj);
    outJ.setZero();
    return [outJ, nj, UJ = U.middleCols(j0, nj), H = Mat()](
               auto pw, const Part& part, Index k0, Index nk, Mat& G) mutable {
      detail::gram_block(part, k0, nk, UJ, H);
      const double* c = part.c.data() + k0;
      for (Index jj = 0; jj < nj; ++jj) {
        double* g = G.col(jj).data();
        const double* h = H.col(jj).data();
        for (Index kk = 0; kk < nk; ++kk) g[kk] = c[kk] * pw(g[kk]) * h[kk];
      }
      detail::scatter_block(part, k0, nk, G, outJ);
    };
  });
}

// out(j) = sum_parts sum_k c_k <z_k, v_j>^l = T(v_j^l).
template <class VType>
void evaluate(const Parts& parts, const VType& V, int l, Vec& out) {
  out.resize(V.cols());
  detail::for_gram_blocks(parts, V, l, 1.0, [&](Index j0, Index nj) {
    out.segment(j0, nj).setZero();
    return [&out, j0, nj](auto pw, const Part& part, Index k0, Index nk, Mat& G) {
      detail::power_in_place(pw, G);
      // the weighted column sums as one GEMV: a scalar reduction per column did not vectorise
      out.segment(j0, nj).noalias() += G.transpose() * part.c.segment(k0, nk);
    };
  });
}

// <T, T'> = sum_{j, j'} c_j c'_j' <z_j, z'_j'>^l, evaluated as sum_j' c'_j' T(z'_j'^l).
inline double inner(const Parts& a, const Parts& b, int l) {
  double total = 0.0;
  Vec vals;
  for (const Part& pb : b) {
    if (pb.rank() == 0) continue;
    if (pb.basis) {
      const Mat E = Mat::Identity(pb.Z.rows(), pb.rank());
      evaluate(a, E, l, vals);
    } else {
      evaluate(a, pb.Z, l, vals);
    }
    total += vals.dot(pb.c);
  }
  return total;
}

// <P, P> for one part, using the symmetry of its Gram matrix: only blocks on and above the
// diagonal are formed (half the work of inner(P, P)). Per-column-block partial sums are added in
// a fixed order, so the result does not depend on the thread count.
inline double self_inner(const Part& part, int l) {
  const Index k = part.rank();
  if (k == 0) return 0.0;
  if (part.basis) return part.c.squaredNorm();  // orthonormal components
  const Index n_blocks = detail::n_col_blocks(k);
  Vec partial = Vec::Zero(n_blocks);
  const double work = 0.5 * static_cast<double>(k) * static_cast<double>(k) * part.Z.rows();
  with_power(l, [&](auto pw) {
    parallel_blocks(n_blocks, work, [&](Index b) {
      const Index j0 = b * kColBlock, nj = std::min(kColBlock, k - j0);
      const auto ZJ = part.Z.middleCols(j0, nj);
      Mat G;
      Vec h;
      double sum = 0.0;
      for (Index k0 = 0; k0 < j0 + nj; k0 += kColBlock) {  // row blocks up to the diagonal
        const Index nk = std::min(kColBlock, k - k0);
        G.noalias() = part.Z.middleCols(k0, nk).transpose() * ZJ;
        detail::power_in_place(pw, G);
        // c_K^T G c_J by a GEMV and a dot (vectorised); a diagonal block counts both of its
        // triangles once (its upper triangle twice and its diagonal once), the others twice
        h.noalias() = G.transpose() * part.c.segment(k0, nk);
        sum += (k0 == j0 ? 1.0 : 2.0) * h.dot(part.c.segment(j0, nj));
      }
      partial[b] = sum;
    });
  });
  return partial.sum();
}

// ||T||_F^2 = <T, T> = sum_a <P_a, P_a> + 2 sum_{a<b} <P_a, P_b>. Rounding in the Gram entries
// limits its absolute accuracy to about l * eps * sum |c_j c_j' <z_j, z_j'>^l|; the true value is
// >= 0, so a negative result is cancellation and is clamped to 0.
inline double norm_squared(const Parts& parts, int l) {
  double v = 0.0;
  for (size_t a = 0; a < parts.size(); ++a) {
    v += self_inner(parts[a], l);
    for (size_t b = a + 1; b < parts.size(); ++b) v += 2.0 * inner({parts[a]}, {parts[b]}, l);
  }
  return std::isfinite(v) ? std::max(v, 0.0) : v;
}

}  // namespace tdflow
