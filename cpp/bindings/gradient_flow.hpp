// The deflation model's flow as bound to Python (bind_flow.cpp), shared with bind_deflation.cpp,
// whose integrate_joins runs it with the watch of events.hpp.
#pragma once

#include "common.hpp"

#include "tdflow/flow.hpp"

namespace tdflow::bindings {

// What the deflation flow records besides the loss and residuals.
struct RunArgs : StepArgs {
  bool save_norms, save_states;
  RunArgs(double t0_, py::handle t_eval_obj, const std::string& method_name, double h,
          double rtol, double atol, double max_step, long max_steps, bool norms, bool states)
      : StepArgs(t0_, t_eval_obj, method_name, h, rtol, atol, max_step, max_steps),
        save_norms(norms), save_states(states) {}
};

// What one run records at each requested time (filled without the GIL).
struct Records {
  std::vector<double> ts, losses, rnorms, dirs, norms, states;
  Outcome outcome;
  std::string error;  // a C++ exception from a batch member
  Vec directional;    // scratch of observe(): no allocation per record

  void observe(GradientFlowSystem& sys, const RunArgs& args, double t, const Mat& W);
  // `error`: the Python error that stopped the run (None: none)
  py::dict to_dict(const RunArgs& args, const Mat& W, py::ssize_t r, py::object error) const;
};

// _core.GradientFlow
struct PyGradientFlow {
  GradientFlow flow;

  PyGradientFlow(py::handle U, py::handle a, int order, double lam, double active_tol,
                 const std::string& contraction);

  // A validated view of W (no copy when it is float64 in the order of Array).
  template <class Array = FArray>
  Array view(py::handle W, const char* name = "W") const {
    Array w = as_real_array<Array>(W, name, 2, flow.dim());
    if (w.shape(1) < 1) throw py::value_error(std::string(name) + " must have m >= 1 columns");
    return w;
  }
  Mat state(py::handle W, const char* name = "W") const { return Mat(mat_of(view(W, name))); }

  Mat rhs(py::handle W);
  double loss(py::handle W);
  double residual_norm(py::handle W);
  Vec directional_residual(py::handle W);
  py::dict integrate(py::handle W0, double t0, py::handle t_eval, const std::string& method,
                     double h, double rtol, double atol, double max_step, long max_steps,
                     bool save_norms, bool save_states, std::optional<py::function> progress,
                     double progress_interval);
  py::tuple integrate_batch(py::handle W0s_obj, double t0, py::handle t_eval,
                            const std::string& method, double h, double rtol, double atol,
                            double max_step, long max_steps, bool save_norms, bool save_states,
                            std::optional<py::function> progress, double progress_interval);
};

}  // namespace tdflow::bindings
