"""Build declaration for rpcbackfill's Cython extensions.

Every ``ext/_name.pyx`` becomes the private compiled module ``rpcbackfill._name``;
the public modules in ``rpcbackfill/`` are thin wrappers around them.  There is no
pure-Python fallback: if an extension fails to build, installation fails.

Developer shortcut: ``RPCBACKFILL_EXT=_lcm python setup.py build_ext --inplace``
builds only the named extension(s) (comma-separated), each in its own build dir,
so parallel work on different kernels does not collide.

Debug / sanitizer build: ``RPCBACKFILL_DEBUG_EXT=1`` turns on Cython's run-time checks
(boundscheck, wraparound, initializedcheck) and compiles with
``-O0 -g -fsanitize=address,undefined -fno-omit-frame-pointer`` (undefined behaviour aborts
instead of printing and going on).  The generated C goes to its own directory and is always
regenerated, so debug and release builds never mix.  How to run the tests under it: README,
"Development".  Rebuild without the variable to get the release build back.
"""

import os
import sys
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).resolve().parent
EXT_DIR = HERE / "ext"

DEBUG = os.environ.get("RPCBACKFILL_DEBUG_EXT", "") not in ("", "0")
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
if DEBUG:
    COMPILE_ARGS = ["-O0", "-g", "-fno-omit-frame-pointer", *SANITIZE, "-Wno-unused-function"]
    LINK_ARGS = ["-g", *SANITIZE]
else:
    COMPILE_ARGS = ["-O3", "-fno-strict-aliasing", "-Wno-unused-function"]
    LINK_ARGS = []
CHECKS = DEBUG  # Cython's bounds / negative-index / memoryview-initialisation checks

only = {name.strip() for name in os.environ.get("RPCBACKFILL_EXT", "").split(",") if name.strip()}

extensions = []
for pyx in sorted(EXT_DIR.glob("_*.pyx")):
    name = pyx.stem
    if only and name not in only:
        continue
    extensions.append(
        Extension(
            f"rpcbackfill.{name}",
            [str(pyx.relative_to(HERE))],
            include_dirs=[str(EXT_DIR), numpy.get_include()],
            extra_compile_args=COMPILE_ARGS,
            extra_link_args=LINK_ARGS,
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        )
    )

if not extensions and not only:
    sys.exit("setup.py: no Cython sources found in ext/")

if only and "build_ext" in sys.argv and "--build-temp" not in " ".join(sys.argv):
    sys.argv += ["--build-temp", str(HERE / "build" / ("tmp-" + "-".join(sorted(only)) + ("-debug" if DEBUG else "")))]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": CHECKS,
            "wraparound": CHECKS,
            "cdivision": True,
            "initializedcheck": CHECKS,
            "embedsignature": True,
        },
        build_dir=str(HERE / "build" / ("cython-debug" if DEBUG else "cython")),
        force=DEBUG,
    ),
)
