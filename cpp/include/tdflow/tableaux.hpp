// Explicit Runge-Kutta methods as data: a Butcher tableau (c, A, b), for the adaptive methods an
// embedded error estimate, and a continuous extension (dense output). One stepper runs them all
// (runge_kutta.hpp, driven by integrate.hpp): a new method is a block of numbers here and an
// entry in kMethods, as diffrax's dopri5.py / dopri8.py / tsit5.py beside runge_kutta.py.
//
// Stages: K_0 = f(y0) and K_i = f(y0 + h sum_{j<i} A_ij K_j); y1 = y0 + h sum_j b_j K_j. In an
// FSAL method ("first same as last") the last row of A is b, so the last stage is f(y1) and
// serves as the next step's K_0.
#pragma once

#include <string>

namespace tdflow {

// How a tableau writes its continuous extension y(t0 + theta h), theta in [0, 1].
enum class DenseForm {
  // y0 + h sum_j b_j(theta) K_j,  b_j(theta) = sum_k P[j][k] theta^(k+1)
  Weights,
  // Hairer's form (dopri5.f, dop853.f): F0 = y1 - y0, F1 = h f0 - F0, F2 = 2 F0 - h (f0 + f1)
  // (f0 = K_0, f1 = f(y1): the cubic Hermite part) and F_{3+i} = h sum_j D[i][j] K_j,
  // y0 + theta (F0 + (1-theta) (F1 + theta (F2 + (1-theta) (F3 + theta (F4 + ...)))))
  Hermite,
};

// Two error rows (dop853.f's 5th- and 3rd-order estimates) give the error ratio
// |h| S_1 / sqrt(m (S_1 + kSecondErrorWeight S_2)), S_k the sum over the m columns of the squared
// ratios of row k (RungeKutta::error_norm; dop853.f: DENO = ERR + 0.01 ERR2).
inline constexpr double kSecondErrorWeight = 0.01;

// Largest number of stages (dense ones included) and of dense terms a tableau may have.
constexpr int kMaxStages = 16;
constexpr int kMaxDenseTerms = 8;

struct Tableau {
  const char* name;
  int order;         // of y1
  int error_order;   // of the embedded estimate: steps scale by err^(-1/(error_order+1)); 0: fixed step
  int stages;        // s, FSAL stage included
  bool fsal;         // row s-1 of A is b: K_{s-1} = f(y1)
  int dense_stages;  // >= s: stages s.. serve only the dense output and are computed only for it
  const double* c;   // (dense_stages) nodes: autonomous flows never use them; kept for checks
  const double* A;   // (dense_stages x dense_stages), row-major, strictly lower triangular
  const double* b;   // (s)
  int error_rows;    // 0 (fixed step), 1 (e = b - bhat), 2 (dop853.f's 5th- and 3rd-order pair)
  const double* e;   // (error_rows x s)
  DenseForm dense;
  int dense_terms;   // Weights: degree of b_j(theta); Hermite: rows of D
  const double* P;   // Weights: (dense_stages x dense_terms) P; Hermite: (dense_terms x dense_stages) D

  const double* row(int i) const { return A + i * dense_stages; }
  bool adaptive() const { return error_rows > 0; }
};

namespace tableau_data {

// Explicit Euler: order 1, linear interpolation.
namespace euler {
inline constexpr double c[1] = {0.0};
inline constexpr double A[1][1] = {{0.0}};
inline constexpr double b[1] = {1.0};
inline constexpr double P[1][1] = {{1.0}};
}  // namespace euler

// The classic Runge-Kutta method, order 4, with its 3rd-order continuous extension
// b1 = th - 3th^2/2 + 2th^3/3, b2 = b3 = th^2 - 2th^3/3, b4 = -th^2/2 + 2th^3/3
// (Hairer, Norsett, Wanner I, II.1 and II.6).
namespace rk4 {
inline constexpr double c[4] = {0.0, 0.5, 0.5, 1.0};
inline constexpr double A[4][4] = {{}, {0.5}, {0.0, 0.5}, {0.0, 0.0, 1.0}};
inline constexpr double b[4] = {1.0 / 6, 1.0 / 3, 1.0 / 3, 1.0 / 6};
inline constexpr double P[4][3] = {
    {1.0, -1.5, 2.0 / 3}, {0.0, 1.0, -2.0 / 3}, {0.0, 1.0, -2.0 / 3}, {0.0, -0.5, 2.0 / 3}};
}  // namespace rk4

// Dormand-Prince 5(4) (Hairer, Norsett, Wanner I, II.5, Table 5.2) with Shampine's 4th-order
// dense output (II.6), as in SciPy's RK45.
namespace dopri5 {
inline constexpr double c[7] = {0.0, 1.0 / 5, 3.0 / 10, 4.0 / 5, 8.0 / 9, 1.0, 1.0};
inline constexpr double A[7][7] = {
    {},
    {1.0 / 5},
    {3.0 / 40, 9.0 / 40},
    {44.0 / 45, -56.0 / 15, 32.0 / 9},
    {19372.0 / 6561, -25360.0 / 2187, 64448.0 / 6561, -212.0 / 729},
    {9017.0 / 3168, -355.0 / 33, 46732.0 / 5247, 49.0 / 176, -5103.0 / 18656},
    {35.0 / 384, 0.0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84}};  // b
inline constexpr double e[1][7] = {{-71.0 / 57600, 0.0, 71.0 / 16695, -71.0 / 1920,
                                    17253.0 / 339200, -22.0 / 525, 1.0 / 40}};
inline constexpr double P[7][4] = {
    {1.0, -8048581381.0 / 2820520608, 8663915743.0 / 2820520608, -12715105075.0 / 11282082432},
    {0, 0, 0, 0},
    {0, 131558114200.0 / 32700410799, -68118460800.0 / 10900136933,
     87487479700.0 / 32700410799},
    {0, -1754552775.0 / 470086768, 14199869525.0 / 1410260304, -10690763975.0 / 1880347072},
    {0, 127303824393.0 / 49829197408, -318862633887.0 / 49829197408,
     701980252875.0 / 199316789632},
    {0, -282668133.0 / 205662961, 2019193451.0 / 616988883, -1453857185.0 / 822651844},
    {0, 40617522.0 / 29380423, -110615467.0 / 29380423, 69997945.0 / 29380423}};
}  // namespace dopri5

// DOP853 as in Hairer's dop853.f and SciPy: 12 stages and f(y1) (row 12 of A holds b), the
// 5th- and 3rd-order error estimates, and a 7th-order dense output from 3 more stages (rows
// 13-15) and the 4 rows of D.
namespace dop853 {
inline constexpr double c[16] = {
    0.0, 0.05260015195876773, 0.0789002279381516, 0.1183503419072274, 0.2816496580927726,
    0.3333333333333333, 0.25, 0.3076923076923077, 0.6512820512820513, 0.6, 0.8571428571428571,
    1.0, 1.0, 0.1, 0.2, 0.7777777777777778};
inline constexpr double A[16][16] = {  // rows end at their last nonzero entry; the rest are zero
    {},
    {0.05260015195876773},
    {0.0197250569845379, 0.0591751709536137},
    {0.02958758547680685, 0.0, 0.08876275643042054},
    {0.2413651341592667, 0.0, -0.8845494793282861, 0.924834003261792},
    {0.037037037037037035, 0.0, 0.0, 0.17082860872947386, 0.12546768756682242},
    {0.037109375, 0.0, 0.0, 0.17025221101954405, 0.06021653898045596, -0.017578125},
    {0.03709200011850479, 0.0, 0.0, 0.17038392571223998, 0.10726203044637328,
     -0.015319437748624402, 0.008273789163814023},
    {0.6241109587160757, 0.0, 0.0, -3.3608926294469414, -0.868219346841726, 27.59209969944671,
     20.154067550477894, -43.48988418106996},
    {0.47766253643826434, 0.0, 0.0, -2.4881146199716677, -0.590290826836843, 21.230051448181193,
     15.279233632882423, -33.28821096898486, -0.020331201708508627},
    {-0.9371424300859873, 0.0, 0.0, 5.186372428844064, 1.0914373489967295, -8.149787010746927,
     -18.52006565999696, 22.739487099350505, 2.4936055526796523, -3.0467644718982196},
    {2.273310147516538, 0.0, 0.0, -10.53449546673725, -2.0008720582248625, -17.9589318631188,
     27.94888452941996, -2.8589982771350235, -8.87285693353063, 12.360567175794303,
     0.6433927460157636},
    {0.054293734116568765, 0.0, 0.0, 0.0, 0.0, 4.450312892752409, 1.8915178993145003,
     -5.801203960010585, 0.3111643669578199, -0.1521609496625161, 0.20136540080403034,
     0.04471061572777259},
    {0.056167502283047954, 0.0, 0.0, 0.0, 0.0, 0.0, 0.25350021021662483, -0.2462390374708025,
     -0.12419142326381637, 0.15329179827876568, 0.00820105229563469, 0.007567897660545699,
     -0.008298},
    {0.03183464816350214, 0.0, 0.0, 0.0, 0.0, 0.028300909672366776, 0.053541988307438566,
     -0.05492374857139099, 0.0, 0.0, -0.00010834732869724932, 0.0003825710908356584,
     -0.00034046500868740456, 0.1413124436746325},
    {-0.42889630158379194, 0.0, 0.0, 0.0, 0.0, -4.697621415361164, 7.683421196062599,
     4.06898981839711, 0.3567271874552811, 0.0, 0.0, 0.0, -0.0013990241651590145,
     2.9475147891527724, -9.15095847217987},
};
inline constexpr double e[2][13] = {
    {0.01312004499419488, 0.0, 0.0, 0.0, 0.0, -1.2251564463762044, -0.4957589496572502,
     1.6643771824549864, -0.35032884874997366, 0.3341791187130175, 0.08192320648511571,
     -0.022355307863886294},  // 5th order
    {-0.18980075407240762, 0.0, 0.0, 0.0, 0.0, 4.450312892752409, 1.8915178993145003,
     -5.801203960010585, -0.4226823213237919, -0.1521609496625161, 0.20136540080403034,
     0.02265179219836082}};  // 3rd order
inline constexpr double D[4][16] = {
    {-8.428938276109013, 0.0, 0.0, 0.0, 0.0, 0.5667149535193777, -3.0689499459498917,
     2.38466765651207, 2.117034582445028, -0.871391583777973, 2.2404374302607883,
     0.6315787787694688, -0.08899033645133331, 18.148505520854727, -9.194632392478356,
     -4.436036387594894},
    {10.427508642579134, 0.0, 0.0, 0.0, 0.0, 242.28349177525817, 165.20045171727028,
     -374.5467547226902, -22.113666853125306, 7.733432668472264, -30.674084731089398,
     -9.332130526430229, 15.697238121770845, -31.139403219565178, -9.35292435884448,
     35.81684148639408},
    {19.985053242002433, 0.0, 0.0, 0.0, 0.0, -387.0373087493518, -189.17813819516758,
     527.8081592054236, -11.57390253995963, 6.8812326946963, -1.0006050966910838,
     0.7777137798053443, -2.778205752353508, -60.19669523126412, 84.32040550667716,
     11.99229113618279},
    {-25.69393346270375, 0.0, 0.0, 0.0, 0.0, -154.18974869023643, -231.5293791760455,
     357.6391179106141, 93.40532418362432, -37.45832313645163, 104.0996495089623,
     29.8402934266605, -43.53345659001114, 96.32455395918828, -39.17726167561544,
     -149.72683625798564},
};
}  // namespace dop853

// Tsitouras 5(4) ("Runge-Kutta pairs of order 5(4) satisfying only the first column
// simplifying assumption", Comput. Math. Appl. 62 (2011) 770-775), FSAL, with the paper's
// 4th-order continuous extension. The printed coefficients rounded to double; e = b - bhat was
// formed, and the factored b_j(theta) were expanded into powers of theta, in 60-digit
// arithmetic from the printed values.
namespace tsit5 {
inline constexpr double c[7] = {0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0};
inline constexpr double A[7][7] = {
    {},
    {0.161},
    {-0.008480655492356989, 0.335480655492357},
    {2.8971530571054935, -6.359448489975075, 4.3622954328695815},
    {5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525},
    {5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401,
     -0.028269050394068383},
    {0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742, -3.290069515436081,
     2.324710524099774}};  // b
inline constexpr double e[1][7] = {{0.0017800110522257714, 0.0008164344596567469,
                                    -0.007880878010261995, 0.1447110071732629,
                                    -0.5823571654525552, 0.45808210592918697,
                                    -0.015151515151515152}};
inline constexpr double P[7][4] = {
    {1.0, -2.763706197274826, 2.9132554618219126, -1.0530884977290216},
    {0.0, 0.13169999999999998, -0.2234, 0.1017},
    {0.0, 3.9302962368947516, -5.941033872131505, 2.490627285651253},
    {0.0, -12.411077166933676, 30.33818863028232, -16.548102889244902},
    {0.0, 37.50931341651104, -88.1789048947664, 47.37952196281928},
    {0.0, -27.896526289197286, 65.09189467479366, -34.87065786149661},
    {0.0, 1.5, -4.0, 2.5}};
}  // namespace tsit5

}  // namespace tableau_data

// A fixed-step method of S stages whose dense output has degree Q.
template <int S, int Q>
constexpr Tableau fixed_step(const char* name, int order, const double (&c)[S],
                             const double (&A)[S][S], const double (&b)[S],
                             const double (&P)[S][Q]) {
  return {name, order, 0, S, false, S, c, &A[0][0], b, 0, nullptr, DenseForm::Weights, Q, &P[0][0]};
}

// An adaptive FSAL method: S stages (row S-1 of A is b), N >= S with the dense-only ones, R
// error rows; its dense output in `form` with `terms` terms.
template <int N, int S, int R>
constexpr Tableau fsal_pair(const char* name, int order, int error_order, const double (&c)[N],
                            const double (&A)[N][N], const double (&e)[R][S], DenseForm form,
                            int terms, const double* P) {
  return {name, order, error_order, S, true, N, c, &A[0][0], A[S - 1], R, &e[0][0], form, terms, P};
}

namespace tableau_data {
inline constexpr Tableau kEuler = fixed_step("euler", 1, euler::c, euler::A, euler::b, euler::P);
inline constexpr Tableau kRK4 = fixed_step("rk4", 4, rk4::c, rk4::A, rk4::b, rk4::P);
inline constexpr Tableau kDopri5 = fsal_pair("dopri5", 5, 4, dopri5::c, dopri5::A, dopri5::e,
                                             DenseForm::Weights, 4, &dopri5::P[0][0]);
inline constexpr Tableau kDop853 = fsal_pair("dop853", 8, 7, dop853::c, dop853::A, dop853::e,
                                             DenseForm::Hermite, 4, &dop853::D[0][0]);
inline constexpr Tableau kTsit5 = fsal_pair("tsit5", 5, 4, tsit5::c, tsit5::A, tsit5::e,
                                            DenseForm::Weights, 4, &tsit5::P[0][0]);
}  // namespace tableau_data

// Every method, by name (integrate's `method`).
inline constexpr const Tableau* kMethods[] = {&tableau_data::kEuler, &tableau_data::kRK4,
                                              &tableau_data::kDopri5, &tableau_data::kDop853,
                                              &tableau_data::kTsit5};

inline const Tableau* find_method(const std::string& name) {
  for (const Tableau* t : kMethods)
    if (name == t->name) return t;
  return nullptr;
}

}  // namespace tdflow
