"""Build declaration for rpcbackfill's Cython extensions.

Every ``ext/_name.pyx`` becomes the private compiled module ``rpcbackfill._name``;
the public modules in ``rpcbackfill/`` are thin wrappers around them.  There is no
pure-Python fallback: if an extension fails to build, installation fails.

Developer shortcut: ``RPCBACKFILL_EXT=_lcm python setup.py build_ext --inplace``
builds only the named extension(s) (comma-separated), each in its own build dir,
so parallel work on different kernels does not collide.
"""

import os
import sys
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).resolve().parent
EXT_DIR = HERE / "ext"

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
            extra_compile_args=["-O3", "-fno-strict-aliasing", "-Wno-unused-function"],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        )
    )

if not extensions and not only:
    sys.exit("setup.py: no Cython sources found in ext/")

if only and "build_ext" in sys.argv and "--build-temp" not in " ".join(sys.argv):
    sys.argv += ["--build-temp", str(HERE / "build" / ("tmp-" + "-".join(sorted(only))))]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "embedsignature": True,
        },
        build_dir=str(HERE / "build" / "cython"),
    ),
)
