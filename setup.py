"""The compiled part of ShiftWatch; everything else is configured in pyproject.toml.

Three Cython modules (Cython is a build requirement): ``model/online/sparse.pyx``, the shift
detector's arithmetic on sparse distributions; ``model/online/topk.pyx``, the best categories
of the model's distributions; and ``model/online/entropy.pyx``, their entropy. ``-ffp-contract=off``: no fused multiply-add, so
their results are the same doubles as plain Python arithmetic, bit for bit, on every x86-64 CPU.
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [
            Extension(
                f"model.online.{name}", [f"model/online/{name}.pyx"], extra_compile_args=["-O2", "-ffp-contract=off"]
            )
            for name in ("entropy", "sparse", "topk")
        ],
        language_level=3,
    )
)
