"""The compiled part of ShiftWatch; everything else is configured in pyproject.toml.

``model/online/sparse.pyx`` is the shift detector's arithmetic on sparse distributions,
compiled by Cython (a build requirement). ``-ffp-contract=off``: no fused multiply-add, so its
results are the same doubles as plain Python arithmetic, bit for bit, on every x86-64 CPU.
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [
            Extension(
                "model.online.sparse", ["model/online/sparse.pyx"], extra_compile_args=["-O2", "-ffp-contract=off"]
            )
        ],
        language_level=3,
    )
)
