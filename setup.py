"""Build of the optional native extension; all other metadata lives in pyproject.toml.

``impact_rt._native_sampler`` is a plain shared library with a C ABI (kernels/native/), loaded by
``impact_rt.native_sampler`` with ctypes: no Python or torch headers are needed. It is declared
``optional``: without a working C++ compiler (or on a compiler it does not support) the package
installs without it, and ``impact_rt.native_sampler.available()`` says why.
"""
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

NATIVE = os.path.join("kernels", "native")
SOURCES = [os.path.join(NATIVE, f) for f in (
    "fused_sampler.cpp", "fused_sampler_generic.cpp", "fused_sampler_avx2.cpp",
    "fused_sampler_avx512.cpp", "fused_sampler_avx512bf16.cpp", "fused_sampler_amx.cpp")]
DEPENDS = [os.path.join(NATIVE, f) for f in (
    "fused_sampler.h", "fused_sampler_internal.h", "fused_sampler_vec.inc", "fused_sampler_body.inc")]

# -ffp-contract=fast: the fp32 micro-kernel relies on a*b+c becoming an FMA.
# No -march: the ISA units set their own targets and are dispatched at run time.
COMMON = ["-O3", "-g0", "-std=c++17", "-ffp-contract=fast", "-fvisibility=hidden", "-fno-exceptions",
          "-Wno-unused-function", "-Wno-psabi"]


class BuildNative(build_ext):
    """GCC/Clang only; OpenMP when the compiler has it, else one thread (with a warning)."""

    def build_extension(self, ext):
        if self.compiler.compiler_type != "unix":
            self.warn(f"skipping {ext.name}: the native sampler needs GCC or Clang, "
                      f"not {self.compiler.compiler_type}")
            return None
        ext.extra_compile_args = COMMON + ["-fopenmp"]
        ext.extra_link_args = ["-fopenmp"]
        try:
            return super().build_extension(ext)
        except Exception as e:  # noqa: BLE001 - retry without OpenMP, then let optional=True skip it
            print(f"warning: building {ext.name} with OpenMP failed ({e}); retrying single-threaded",
                  file=sys.stderr)
        ext.extra_compile_args = COMMON
        ext.extra_link_args = []
        return super().build_extension(ext)


setup(
    ext_modules=[Extension("impact_rt._native_sampler", sources=SOURCES, depends=DEPENDS,
                           include_dirs=[NATIVE], language="c++", optional=True)],
    cmdclass={"build_ext": BuildNative},
)
