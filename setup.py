"""Package layout that pyproject.toml cannot express (everything else lives there).

The dashboard (``app.py``, ``pages/``) and the vendored data (``data/``) stay at the top of
the checkout, yet an installed package needs them: the checkout's root is mapped to the
package ``trustdyn._project`` (see ``trustdyn.paths``), which carries ``app.py`` and the
files named in ``[tool.setuptools.package-data]``, and not this script.
"""

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


class _BuildPy(build_py):
    def find_package_modules(self, package: str, package_dir: str) -> list[tuple[str, str, str]]:
        modules = super().find_package_modules(package, package_dir)
        return [module for module in modules if module[:2] != ("trustdyn._project", "setup")]


setup(
    packages=[*find_packages(include=["trustdyn", "trustdyn.*", "precompute"]),
              "trustdyn._project"],
    package_dir={"trustdyn._project": "."},
    cmdclass={"build_py": _BuildPy},
)
