"""Build the optional compiled line decoder (offrl/io/_linedec.c).

Everything else is configured in pyproject.toml. The extension is optional: where it
cannot be built (no C compiler), offrl installs and reads files the same, only slower.
"""

import numpy as np
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "offrl.io._linedec",
            sources=["offrl/io/_linedec.c"],
            depends=["offrl/io/_lz4frame.h"],
            include_dirs=[np.get_include()],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
