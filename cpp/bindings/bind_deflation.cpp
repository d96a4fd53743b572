// Algorithm 2's watch (events.hpp): _core.integrate_joins runs a GradientFlow and checks
// Definition 1 and Proposition 1 of Ge et al. 2021 on every accepted step.
#include "gradient_flow.hpp"

#include <cmath>
#include <type_traits>

#include "tdflow/events.hpp"

namespace tdflow::bindings {

namespace {

// GradientFlow.integrate plus Definition 1 and Proposition 1 of events.hpp on every accepted step
// (Proposition 1 also on the initial state). `member` (m integers) holds the direction whose S_i
// holds each column (-1: S_empty); epoch, beta and gamma set Proposition 1's thresholds. The
// result adds the crossings of delta1 (joins among them), the membership after the run and the
// worst margin of each condition of Proposition 1 with its time.
py::dict integrate_joins_py(PyGradientFlow& self, py::handle W0, double t0, py::handle t_eval,
                            const std::string& method, double h, double rtol, double atol,
                            double max_step, long max_steps, bool save_norms, bool save_states,
                            py::handle member_obj, double delta1, double alpha, long epoch,
                            double beta, double gamma, std::optional<py::function> progress,
                            double progress_interval) {
  Mat W = self.state(W0, "W0");
  const RunArgs args(t0, t_eval, method, h, rtol, atol, max_step, max_steps, save_norms, save_states);
  FArray member_arr = as_real_array(member_obj, "member", 1, W.cols());
  if (!(delta1 > 0) || !std::isfinite(delta1)) throw py::value_error("delta1 must be finite and > 0");
  if (!(alpha > 0 && alpha < 1)) throw py::value_error("alpha must lie in (0, 1)");
  if (epoch < 0) throw py::value_error("epoch must be >= 0");
  if (!(beta > 0) || !std::isfinite(beta)) throw py::value_error("beta must be finite and > 0");
  if (!(gamma >= 0 && gamma < 1)) throw py::value_error("gamma must lie in [0, 1)");
  const Target& target = self.flow.target();
  std::vector<Index> member(W.cols());
  for (Index k = 0; k < W.cols(); ++k) {
    const double v = member_arr.data()[k];
    if (!(v == std::floor(v)) || v < -1 || v >= static_cast<double>(target.rank()))
      throw py::value_error("member entries must be -1 or a direction index < r");
    member[k] = static_cast<Index>(v);
  }
  const double m = static_cast<double>(W.cols());
  const Prop1Params params{delta1, alpha, self.flow.lam(),
                           static_cast<double>(epoch) * m * delta1 * delta1, beta / (1.0 - gamma)};
  Records rec;
  Ticker ticker(std::move(progress), progress_interval);
  DeflationWatch watch(target.U, target.basis, target.a, params, std::move(member), W, args.t0);
  rec.outcome = run_released(ticker, [&](auto& base_tick, auto& poll) {
    GradientFlowSystem sys(self.flow);
    WatchedTick<DeflationWatch, std::remove_reference_t<decltype(base_tick)>> tick{watch, base_tick};
    return tdflow::integrate(sys, args.method, W, args.t0, args.t_eval, args.opt,
                             [&](double t, const Mat& Wt) { rec.observe(sys, args, t, Wt); },
                             tick, poll);
  });
  py::dict out = rec.to_dict(args, W, target.rank(), ticker.error());
  const auto& ev = watch.crossings();
  const py::ssize_t n = static_cast<py::ssize_t>(ev.size());
  py::array_t<long long> cols(n), dirs(n);
  py::array_t<double> times(n), norms(n), mis(n);
  py::array_t<bool> up(n), joined(n);
  for (py::ssize_t i = 0; i < n; ++i) {
    cols.mutable_at(i) = ev[i].column;
    dirs.mutable_at(i) = ev[i].direction;
    times.mutable_at(i) = ev[i].t;
    norms.mutable_at(i) = ev[i].norm;
    mis.mutable_at(i) = ev[i].misalignment;
    up.mutable_at(i) = ev[i].upward;
    joined.mutable_at(i) = ev[i].joined;
  }
  out["crossing_column"] = cols;
  out["crossing_direction"] = dirs;
  out["crossing_t"] = times;
  out["crossing_norm"] = norms;
  out["crossing_misalignment"] = mis;
  out["crossing_upward"] = up;
  out["crossing_joined"] = joined;
  py::array_t<long long> member_out(W.cols());
  for (Index k = 0; k < W.cols(); ++k) member_out.mutable_at(k) = watch.member()[k];
  out["member"] = member_out;
  const char* names[Prop1Margins::kConditions] = {"a", "b", "c_lower", "c_upper", "d"};
  py::dict margin, margin_t;
  for (int c = 0; c < Prop1Margins::kConditions; ++c) {
    margin[names[c]] = watch.margins().margin[c];
    margin_t[names[c]] = watch.margins().time[c];
  }
  out["prop1_margin"] = margin;
  out["prop1_t"] = margin_t;
  out["n_checks"] = watch.checks();
  return out;
}

}  // namespace

void register_deflation(py::module_& m) {
  m.def("integrate_joins", &integrate_joins_py, py::arg("flow"), py::arg("W0"), py::arg("t0"),
        py::arg("t_eval"), py::arg("method"), py::arg("h"), py::arg("rtol"), py::arg("atol"),
        py::arg("max_step"), py::arg("max_steps"), py::arg("save_norms"), py::arg("save_states"),
        py::arg("member"), py::arg("delta1"), py::arg("alpha"), py::arg("epoch"),
        py::arg("beta"), py::arg("gamma"), py::arg("progress"), py::arg("progress_interval"),
        "GradientFlow.integrate plus, on every accepted step, Definition 1 of Ge et al. 2021 "
        "(a column of S_empty joins S_i where its norm crosses delta1, located on the dense "
        "output, if <w,u_i>^2/||w||^2 >= 1 - alpha^2 there) and the worst margins of the four "
        "conditions of Proposition 1.");
}

}  // namespace tdflow::bindings
