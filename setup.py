"""Package discovery that pyproject.toml cannot express: src/ plus the top-level KFP folders.

Everything else about the distribution is in pyproject.toml. components/ and pipelines/ stay
top-level folders (the layout KFP users expect) and install as kfnas.components and
kfnas.pipelines, with any subpackages they grow; schemas/ installs as kfnas.schemas.
"""

from setuptools import find_packages, setup

_SHIPPED_AS = {
    "components": "kfnas.components",
    "pipelines": "kfnas.pipelines",
    "schemas": "kfnas.schemas",
}

packages = find_packages("src")
for folder, name in _SHIPPED_AS.items():
    packages += [name, *(f"{name}.{sub}" for sub in find_packages(folder))]

setup(packages=packages)
