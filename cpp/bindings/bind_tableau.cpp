// The steppers' data (tableaux.hpp) and the step-size controller's constants (controller.hpp),
// exported so that the torch stepper (torch_stepper.py) runs the very same numbers rather than
// a second copy.
#include "common.hpp"

#include <string>
#include <utility>
#include <vector>

#include "tdflow/controller.hpp"
#include "tdflow/tableaux.hpp"

namespace tdflow::bindings {

namespace {

std::vector<double> row(const double* x, int n) { return std::vector<double>(x, x + n); }

// rows x cols, row-major
std::vector<std::vector<double>> rows(const double* x, int n_rows, int n_cols) {
  std::vector<std::vector<double>> out;
  for (int i = 0; i < n_rows; ++i) out.push_back(row(x + i * n_cols, n_cols));
  return out;
}

py::dict controller(const Tableau& t) {
  using C = Controller;
  static constexpr std::pair<const char*, double C::*> kFields[] = {
      {"safety", &C::safety}, {"min_factor", &C::min_factor}, {"max_factor", &C::max_factor},
      {"nonfinite_factor", &C::nonfinite_factor}, {"stretch", &C::stretch}, {"tiny", &C::tiny},
      {"first_ratio", &C::first_ratio}, {"first_min_norm", &C::first_min_norm},
      {"first_fallback", &C::first_fallback}, {"first_flat", &C::first_flat},
      {"first_flat_ratio", &C::first_flat_ratio}, {"first_growth", &C::first_growth}};
  py::dict out;
  out["exponent"] = -1.0 / (t.error_order + 1);
  for (const auto& [name, field] : kFields) out[name] = kController.*field;
  return out;
}

py::dict tableau(const std::string& name) {
  const Tableau& t = parse_method(name, "no tableau: ");
  const int s = t.stages, n = t.dense_stages;
  py::dict out;
  out["name"] = t.name;
  out["order"] = t.order;
  out["error_order"] = t.error_order;
  out["adaptive"] = t.adaptive();
  out["stages"] = s;
  out["fsal"] = t.fsal;
  out["dense_stages"] = n;
  out["c"] = row(t.c, n);
  std::vector<std::vector<double>> A;
  for (int i = 0; i < n; ++i) A.push_back(row(t.row(i), i));  // row i: its i entries left of the diagonal
  out["A"] = A;
  out["b"] = row(t.b, s);
  if (t.error_rows >= 1) out["e"] = row(t.e, s);
  if (t.error_rows >= 2) {
    out["e2"] = row(t.e + s, s);
    out["e2_weight"] = kSecondErrorWeight;
  }
  if (t.dense == DenseForm::Weights) {
    out["dense"] = "weights";
    out["P"] = rows(t.P, n, t.dense_terms);
  } else {
    out["dense"] = "hermite";
    out["D"] = rows(t.P, t.dense_terms, n);
  }
  if (t.adaptive()) out["controller"] = controller(t);
  if (name == "dop853") {  // the names of dop853.f
    out["C"] = out["c"];
    out["E5"] = row(t.e, 12);
    out["E3"] = row(t.e + s, 12);
  }
  return out;
}

std::vector<std::string> methods() {
  std::vector<std::string> out;
  for (const Tableau* t : kMethods) out.push_back(t->name);
  return out;
}

}  // namespace

void register_tableau(py::module_& m) {
  m.def("methods", &methods, "Names of the steppers, in the order of tableaux.hpp.");
  m.def("tableau", &tableau, py::arg("method"),
        "The coefficients of a stepper as lists of floats: nodes c, rows A[i] (the i entries "
        "left of the diagonal), weights b; for an adaptive method the error weights e = b - "
        "bhat (dop853: e and e2, its 5th- and 3rd-order estimates, combined with the weight "
        "e2_weight as dop853.f does) and the step-size "
        "controller's constants; the dense output as P (dense == 'weights': b_j(theta) = "
        "sum_k P[j][k] theta^(k+1)) or D (dense == 'hermite', Hairer's form). dop853 also "
        "under its dop853.f names C, E5, E3.");
}

}  // namespace tdflow::bindings
