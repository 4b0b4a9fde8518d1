"""Only the C extension lives here; everything else is in pyproject.toml."""

import sys

from setuptools import Extension, setup

# No FMA contraction: every build of the kernel gives the same bits (see _rowscore.c).
flags = [] if sys.platform == "win32" else ["-O3", "-ffp-contract=off", "-fno-trapping-math"]

setup(ext_modules=[Extension("dlmcli.engine._rowscore", ["dlmcli/engine/_rowscore.c"],
                             extra_compile_args=flags, optional=True)])
