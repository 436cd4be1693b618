"""Build the optional compiled accelerators: every ``src/steptrace/_speedups/*.c``
is one extension module, ``steptrace._speedups.<name>``.

Everything else about the package is in ``pyproject.toml``. Each accelerator is
optional: without a C compiler or Python's headers the build skips it, and
steptrace runs on the pure-Python code each one mirrors (see
``steptrace._speedups``).
"""

from pathlib import Path

from setuptools import Extension, setup

SOURCES = sorted(Path("src/steptrace/_speedups").glob("*.c"))

setup(
    ext_modules=[
        Extension(
            f"steptrace._speedups.{source.stem}",
            [source.as_posix()],
            optional=True,
            extra_compile_args=["-O2"],
        )
        for source in SOURCES
    ]
)
