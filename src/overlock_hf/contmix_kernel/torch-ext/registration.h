// Registration macros of a kernels-hub extension (kernel-builder generates an equivalent file; this one is
// used by the builds without nix, see overlock_hf.kernel_builder).
//
// TORCH_EXTENSION_NAME is the unique op namespace of one build (also its Python module name), so several
// builds of the kernel can be loaded in one process. The module is a plain CPython module without
// pybind11, which keeps the extension within the stable (abi3) Python API.
#pragma once

#include <Python.h>

#define CONTMIX_CONCAT_INNER(a, b) a##b
#define CONTMIX_CONCAT(a, b) CONTMIX_CONCAT_INNER(a, b)
#define CONTMIX_STRINGIFY_INNER(a) #a
#define CONTMIX_STRINGIFY(a) CONTMIX_STRINGIFY_INNER(a)

// TORCH_LIBRARY with a macro-expanded namespace.
#define TORCH_LIBRARY_EXPAND(NAME, MODULE) TORCH_LIBRARY(NAME, MODULE)

// The module init function: importing the shared object runs the static op registrations above.
#define REGISTER_EXTENSION(NAME)                                                                         \
  PyMODINIT_FUNC CONTMIX_CONCAT(PyInit_, NAME)() {                                                       \
    static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, CONTMIX_STRINGIFY(NAME), nullptr, 0,     \
                                        nullptr};                                                        \
    return PyModule_Create(&module);                                                                     \
  }
