// _core.DeepLinearFlow: gradient flow of a deep linear model f(W_1 ... W_L) (linear.hpp).
#include "common.hpp"

#include "tdflow/linear.hpp"

namespace tdflow::bindings {

namespace {

// Deep linear model f(W_1 ... W_L): the packed state is P x L, one column per layer (linear.hpp).
struct PyDeepLinearFlow {
  DeepLinearFlow flow;

  static DeepLinearFlow make(const std::vector<long>& dims_in, py::handle Y, py::handle X) {
    if (dims_in.size() < 2)
      throw py::value_error("dims must hold n_0, ..., n_L with L >= 1 layers");
    std::vector<Index> dims;
    for (long n : dims_in) {
      if (n < 1) throw py::value_error("every entry of dims must be >= 1");
      dims.push_back(static_cast<Index>(n));
    }
    const bool regression = !X.is_none();
    if (regression) {
      FArray x = as_real_array(X, "X", 2, -1, dims.front());
      FArray y = as_real_array(Y, "Y", 2, x.shape(0), dims.back());
      return DeepLinearFlow(dims, Mat(mat_of(y)), Mat(mat_of(x)), true);
    }
    FArray y = as_real_array(Y, "Y", 2, dims.front(), dims.back());
    return DeepLinearFlow(dims, Mat(mat_of(y)), Mat(), false);
  }

  PyDeepLinearFlow(const std::vector<long>& dims, py::handle Y, py::handle X)
      : flow(make(dims, Y, X)) {}

  Mat state(py::handle theta, const char* name = "theta") const {
    FArray t = as_real_array(theta, name, 2, flow.rows(), flow.depth());
    return Mat(mat_of(t));
  }

  Mat rhs(py::handle theta) {
    const Mat th = state(theta);
    return released(
        "the right-hand side",
        [&] {
          Mat d;
          flow.rhs(th, d);
          return d;
        },
        [&] { return "largest layer norm " + num(largest_column_norm(th)); });
  }

  py::dict integrate(py::handle theta0, double t0, py::handle t_eval_obj,
                     const std::string& method_name, double h, double rtol, double atol,
                     double max_step, long max_steps, bool save_products, bool save_imbalances,
                     bool save_states, std::optional<py::function> progress,
                     double progress_interval) {
    Mat theta = state(theta0, "theta0");
    const StepArgs args(t0, t_eval_obj, method_name, h, rtol, atol, max_step, max_steps);

    const Index L = flow.depth(), n0 = flow.dims().front(), nL = flow.dims().back();
    Index n_imb = 0;
    for (Index l = 1; l < L; ++l) n_imb += flow.dims()[l] * flow.dims()[l];
    std::vector<double> ts, losses, gaps, gn2, products, imbs, states;
    Mat dth;
    auto observe = [&](double t, const Mat& th) {
      ts.push_back(t);
      const Mat W = flow.product(th);
      losses.push_back(flow.f(W));
      gaps.push_back(flow.gap(W));
      flow.rhs(th, dth);
      gn2.push_back(dth.squaredNorm());  // -dL/dt = ||grad L||^2
      if (save_products) products.insert(products.end(), W.data(), W.data() + n0 * nL);
      if (save_imbalances)
        for (Index l = 1; l < L; ++l) {
          const Mat D = flow.imbalance(th, l);
          imbs.insert(imbs.end(), D.data(), D.data() + D.size());
        }
      if (save_states) states.insert(states.end(), th.data(), th.data() + th.size());
    };
    Ticker ticker(std::move(progress), progress_interval);
    const Outcome res = run_released(ticker, [&](auto& tick, auto& poll) {
      return tdflow::integrate(flow, args.method, theta, args.t0, args.t_eval, args.opt, observe,
                               tick, poll);
    });

    const py::ssize_t n = static_cast<py::ssize_t>(ts.size());
    py::dict out;
    out["t"] = py::array_t<double>(n, ts.data());
    out["loss"] = py::array_t<double>(n, losses.data());
    out["gap"] = py::array_t<double>(n, gaps.data());
    out["grad_norm_sq"] = py::array_t<double>(n, gn2.data());
    if (save_products) {
      // each snapshot column-major: (n, nL, n0) in C order, transposed to (n, n0, nL)
      py::array_t<double> p({n, static_cast<py::ssize_t>(nL), static_cast<py::ssize_t>(n0)},
                            products.data());
      out["products"] = p.attr("transpose")(0, 2, 1);
    }
    if (save_imbalances)
      out["imbalances"] = py::array_t<double>({n, static_cast<py::ssize_t>(n_imb)}, imbs.data());
    if (save_states) {
      py::array_t<double> s({n, static_cast<py::ssize_t>(L), static_cast<py::ssize_t>(flow.rows())},
                            states.data());
      out["states"] = s.attr("transpose")(0, 2, 1);
    }
    out["theta"] = theta;
    put_outcome(out, res, ticker.error());
    return out;
  }
};

}  // namespace

void register_linear(py::module_& m) {
  py::class_<PyDeepLinearFlow>(m, "DeepLinearFlow")
      .def(py::init<const std::vector<long>&, py::handle, py::handle>(), py::arg("dims"),
           py::arg("Y"), py::arg("X"))
      .def_property_readonly("rows", [](const PyDeepLinearFlow& f) { return f.flow.rows(); })
      .def_property_readonly("W_star", [](const PyDeepLinearFlow& f) { return f.flow.W_star(); })
      .def_property_readonly("f_star", [](const PyDeepLinearFlow& f) { return f.flow.f_star(); })
      .def("rhs", &PyDeepLinearFlow::rhs, py::arg("theta"))
      .def("integrate", &PyDeepLinearFlow::integrate, py::arg("theta0"), py::arg("t0"),
           py::arg("t_eval"), py::arg("method"), py::arg("h"), py::arg("rtol"), py::arg("atol"),
           py::arg("max_step"), py::arg("max_steps"), py::arg("save_products"),
           py::arg("save_imbalances"), py::arg("save_states"), py::arg("progress"),
           py::arg("progress_interval"));
}

}  // namespace tdflow::bindings
