# Metadata lives in pyproject.toml. This file only maps the top-level folders hw/, sim/ and
# mappings/ onto chipforge.hw, chipforge.sim and chipforge.mappings; find_packages keeps a
# new sub-package from being silently dropped from the wheel.
from setuptools import find_packages, setup

ROOTS = ("hw", "sim", "mappings")
remapped = find_packages(include=[pattern for root in ROOTS for pattern in (root, f"{root}.*")])
setup(
    packages=["chipforge", *find_packages(include=["chipforge.*"]),
              *(f"chipforge.{name}" for name in remapped)],
    package_dir={"chipforge": "chipforge", **{f"chipforge.{root}": root for root in ROOTS}},
)
