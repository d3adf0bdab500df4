"""Package discovery for the wheel: every package under ``promptdsl/`` and under ``tui/`` (imported as
``promptdsl_tui``). pyproject.toml's ``[tool.setuptools.packages.find]`` takes one import root only,
and a hand-written list went stale (it left out promptdsl.testing and the TUI's screens and widgets).
All other metadata is in pyproject.toml.
"""

from setuptools import find_packages, setup

TUI = "promptdsl_tui"

setup(
    packages=[
        *find_packages(include=["promptdsl", "promptdsl.*"]),
        TUI,
        *(f"{TUI}.{name}" for name in find_packages(where="tui")),
    ],
    package_dir={TUI: "tui"},
)
