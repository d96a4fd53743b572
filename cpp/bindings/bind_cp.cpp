// CP tensors T = sum_j c_j z_j^{(x)l} (cp_tensor.hpp): contractions, evaluations, inner products
// and norms, each refusing a result that overflows double precision.
#include "common.hpp"

#include <cmath>
#include <string>

#include "tdflow/small_contract.hpp"

namespace tdflow::bindings {

namespace {

// Components Z (d x k) and coefficients c (k) of one CP tensor.
struct CPArgs {
  FArray Z, c;
  CPArgs(py::handle Zo, py::handle co, const char* zname, const char* cname)
      : Z(as_real_array(Zo, zname, 2)), c(as_real_array(co, cname, 1, Z.shape(1))) {
    if (Z.shape(0) < 1) throw py::value_error(std::string(zname) + " must have d >= 1 rows");
  }
  Parts parts() const { return {Part(Z.data(), Z.shape(0), Z.shape(1), c.data())}; }
  py::ssize_t dim() const { return Z.shape(0); }

  // the sizes that make a contraction overflow
  std::string sizes(const char* vname, const FArray& v) const {
    return "largest |c_j| " + num(vec_of(c).cwiseAbs().maxCoeff()) + ", largest column norm of Z " +
           num(largest_column_norm(mat_of(Z))) + ", of " + vname + " " +
           num(largest_column_norm(mat_of(v)));
  }
};

// op(parts, V, out) for the tensor (Z, c) and the columns of V, without the GIL; `what` names
// the result in the overflow message.
template <class Out, class Op>
Out over_columns(py::handle Z, py::handle c, py::handle V, int order, const char* what, Op&& op) {
  check_order(order);
  CPArgs t(Z, c, "Z", "c");
  FArray v = as_real_array(V, "V", 2, t.dim());
  return released(
      what,
      [&] {
        Out out;
        op(t.parts(), mat_of(v), out);
        return out;
      },
      [&] { return t.sizes("V", v); });
}

Mat contract_py(py::handle Z, py::handle c, py::handle V, int order) {
  return over_columns<Mat>(Z, c, V, order, "T(v^{l-1}, I)",
                           [&](const Parts& t, const MatMap& v, Mat& out) {
                             contract(t, v, order - 1, out);
                           });
}

Mat contract_mixed_py(py::handle Z, py::handle c, py::handle V, py::handle U, int order) {
  check_order(order);
  CPArgs t(Z, c, "Z", "c");
  FArray v = as_real_array(V, "V", 2, t.dim());
  FArray u = as_real_array(U, "U", 2, t.dim(), v.shape(1));
  return released(
      "T(v^{l-2}, u, I)",
      [&] {
        Mat out;
        contract_mixed(t.parts(), mat_of(v), mat_of(u), order - 2, out);
        return out;
      },
      [&] { return t.sizes("V", v) + ", of U " + num(largest_column_norm(mat_of(u))); });
}

Vec evaluate_py(py::handle Z, py::handle c, py::handle V, int order) {
  return over_columns<Vec>(Z, c, V, order, "T(v^l)",
                           [&](const Parts& t, const MatMap& v, Vec& out) {
                             evaluate(t, v, order, out);
                           });
}

double inner_py(py::handle Z1, py::handle c1, py::handle Z2, py::handle c2, int order) {
  check_order(order);
  CPArgs a(Z1, c1, "Z1", "c1"), b(Z2, c2, "Z2", "c2");
  if (a.dim() != b.dim())
    throw py::value_error("Z1 and Z2 must have the same number of rows d");
  return released(
      "<T1, T2>", [&] { return inner(a.parts(), b.parts(), order); },
      [&] { return a.sizes("Z2", b.Z); });
}

double norm_squared_py(py::handle Z, py::handle c, int order) {
  check_order(order);
  CPArgs t(Z, c, "Z", "c");
  return released(
      "||T||_F^2", [&] { return norm_squared(t.parts(), order); },
      [&] { return t.sizes("Z", t.Z); });
}

// The register kernels of small_contract.hpp on one tensor (for tests: they must equal the GEMM
// path of contract/evaluate/norm_squared); None where they do not serve (d > 16).
py::object small_py(py::handle Z, py::handle c, py::handle V, int order, const std::string& op) {
  check_order(order);
  CPArgs t(Z, c, "Z", "c");
  FArray v = as_real_array(V.is_none() ? Z : V, "V", 2, t.dim());
  Mat out;
  Vec vals;
  double n2 = 0.0;
  const bool ok = without_gil([&] {
    const Parts parts = t.parts();
    return op == "contract"   ? small_contract(parts, mat_of(v), order - 1, out)
           : op == "evaluate" ? small_evaluate(parts, mat_of(v), order, vals)
                              : small_norm_squared(parts, order, vals, n2);
  });
  if (!ok) return py::none();
  if (op == "contract") return py::cast(out);
  if (op == "evaluate") return py::cast(vals);
  return py::float_(n2);
}

}  // namespace

void register_cp(py::module_& m) {
  m.def("_pair_rounds", &detail::pair_rounds, py::arg("n_blocks"),
        "The round-robin schedule of contract_self_add (for tests).");
  m.def("_self_block", &detail::self_block, py::arg("k"),
        "Block edge contract_self_add uses for k columns (for tests).");
  m.def("_small", &small_py, py::arg("Z"), py::arg("c"), py::arg("V"), py::arg("order"),
        py::arg("op"),
        "contract/evaluate/norm_squared ('contract', 'evaluate', 'norm') by the register "
        "kernels of small d (for tests); None for d > 16.");
  m.def("contract", &contract_py, py::arg("Z"), py::arg("c"), py::arg("V"), py::arg("order"),
        "T(v^{l-1}, I) for every column v of V, T = sum_j c_j z_j^{(x)l}. Returns d x m.");
  m.def("contract_mixed", &contract_mixed_py, py::arg("Z"), py::arg("c"), py::arg("V"),
        py::arg("U"), py::arg("order"),
        "T(v^{l-2}, u, I) for paired columns v of V and u of U. Returns d x m.");
  m.def("evaluate", &evaluate_py, py::arg("Z"), py::arg("c"), py::arg("V"), py::arg("order"),
        "T(v^l) for every column v of V. Returns (m,).");
  m.def("inner", &inner_py, py::arg("Z1"), py::arg("c1"), py::arg("Z2"), py::arg("c2"),
        py::arg("order"), "<T1, T2> = sum c1_i c2_j <z1_i, z2_j>^l.");
  m.def("norm_squared", &norm_squared_py, py::arg("Z"), py::arg("c"), py::arg("order"),
        "||T||_F^2 from the upper triangle of the Gram matrix, clamped at 0.");
}

}  // namespace tdflow::bindings
