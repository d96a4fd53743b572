// The module tdflow._core (private): every binding file registers its concept here. Each
// validates its inputs, releases the GIL around the core's work and never touches a Python
// object inside an OpenMP region. Arrays are float64; Fortran-ordered ones are used without a
// copy.
#include "pybind11.hpp"

PYBIND11_MODULE(_core, mod) {
  using namespace tdflow::bindings;
  mod.doc() = "tdflow's compiled core (private): CP contractions, gradient-flow RHS, steppers";
#ifdef VERSION_INFO
#define TDFLOW_STR2(x) #x
#define TDFLOW_STR(x) TDFLOW_STR2(x)
  mod.attr("__version__") = TDFLOW_STR(VERSION_INFO);
#endif
  register_threads(mod);
  register_cp(mod);
  register_tableau(mod);
  register_flow(mod);  // before register_deflation, whose signature names GradientFlow
  register_linear(mod);
  register_deflation(mod);
}
