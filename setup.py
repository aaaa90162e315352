"""Which files go into the wheel; everything else about the package is in pyproject.toml.

The library is ``coremtl_lite``; the tutorials and course assignments (``tutorials/``) ship inside it
as ``coremtl_lite/tutorials`` (notebooks and guides only), so that ``coremtl-lite tutorials DIR`` and
``coremtl-lite assignments --check`` work from an installed wheel. A source checkout keeps using
``tutorials/`` directly (see ``coremtl_lite.assignments.tutorials_dir``).
"""

from setuptools import find_packages, setup

TUTORIALS = {
    "coremtl_lite.tutorials": "tutorials",
    "coremtl_lite.tutorials.assignments": "tutorials/assignments",
    "coremtl_lite.tutorials.assignments.student": "tutorials/assignments/student",
}

setup(
    packages=find_packages(include=["coremtl_lite", "coremtl_lite.*"]) + list(TUTORIALS),
    package_dir=TUTORIALS,
    package_data={"coremtl_lite": ["py.typed"], **{name: ["*.ipynb", "*.md"] for name in TUTORIALS}},
)
