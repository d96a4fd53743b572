// The step-size controller of the adaptive methods (integrate_adaptive in integrate.hpp): its
// constants, exported with the tableaux (_core.tableau) so that every stepper uses these numbers.
#pragma once

namespace tdflow {

// Hairer, Norsett, Wanner I, II.4, with SciPy's solve_ivp constants. A step with error ratio err <= 1 (RungeKutta::error_norm) is
// taken and the next is h * min(max_factor, safety err^exponent), exponent = -1/(error_order+1)
// of the method, at most h after a rejection; err > 1 retries with
// h * max(min_factor, safety err^exponent); a step that gives NaN/Inf retries with
// h * nonfinite_factor.
struct Controller {
  double safety = 0.9;
  double min_factor = 0.2;
  double max_factor = 10.0;        // also the growth after an error-free step
  double nonfinite_factor = 0.1;
  double stretch = 1.01;           // a step that ends within 1% of the last time goes to it
  double tiny = 16.0;              // steps below tiny * eps * |t| cannot advance t
  // Hairer's starting step (II.4): h0 = first_ratio d0 / d1 (first_fallback if d0 or d1 is
  // below first_min_norm), h1 = (first_ratio / max(d1, d2))^(1/(error_order+1)) (or
  // max(first_fallback, first_flat_ratio h0) if max(d1, d2) <= first_flat),
  // h = min(first_growth h0, h1); d0, d1, d2 the norms of y, f(y) and f' f estimated by an Euler
  // step of size h0, as column_error_norm.
  double first_ratio = 0.01;
  double first_min_norm = 1e-5;
  double first_fallback = 1e-6;
  double first_flat = 1e-15;
  double first_flat_ratio = 1e-3;
  double first_growth = 100.0;
};
inline constexpr Controller kController{};

}  // namespace tdflow
