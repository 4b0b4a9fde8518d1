"""Only the C extension lives here; everything else is in pyproject.toml."""

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# No FMA contraction: every build of the kernel gives the same bits (see _rowscore.c).
FLAGS = [] if sys.platform == "win32" else ["-O3", "-ffp-contract=off", "-fno-trapping-math"]
OPENMP = [] if sys.platform in ("win32", "darwin") else ["-fopenmp"]


class BuildExt(build_ext):
    """The kernel with OpenMP where the compiler has it (the row threads), else without."""

    def build_extension(self, ext):
        if OPENMP and ext.name.endswith("_rowscore"):
            ext.extra_compile_args, ext.extra_link_args = FLAGS + OPENMP, OPENMP
            try:
                return super().build_extension(ext)
            except Exception as e:  # noqa: BLE001  (CompileError, LinkError: the compiler's words are above)
                print(f"dlm: building the scoring kernel without OpenMP ({e})", file=sys.stderr)
        ext.extra_compile_args, ext.extra_link_args = FLAGS, []
        return super().build_extension(ext)


setup(ext_modules=[Extension("dlmcli.engine._rowscore", ["dlmcli/engine/_rowscore.c"], optional=True),
                   Extension("dlmcli.runtime._abort", ["dlmcli/runtime/_abort.c"], optional=True)],
      cmdclass={"build_ext": BuildExt})
