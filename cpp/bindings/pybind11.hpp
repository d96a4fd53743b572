// Included first by every binding file (as iminuit's src/pybind11.hpp), so that every
// translation unit sees the same pybind11 type casters; and the register_* functions, one per
// binding file, that module.cpp calls.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/eigen.h>
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

namespace tdflow::bindings {

namespace py = pybind11;

void register_threads(py::module_& m);    // bind_threads.cpp
void register_cp(py::module_& m);         // bind_cp.cpp
void register_tableau(py::module_& m);    // bind_tableau.cpp
void register_flow(py::module_& m);       // bind_flow.cpp
void register_linear(py::module_& m);     // bind_linear.cpp
void register_deflation(py::module_& m);  // bind_deflation.cpp

}  // namespace tdflow::bindings
