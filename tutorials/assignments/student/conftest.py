"""The student versions are meant to fail until filled in: keep them out of ``pytest --nbval tutorials``.

They are checked instead by ``tests/test_assignments.py`` (up to date with the solutions, and failing
with teaching messages when run unfilled).
"""

collect_ignore_glob = ["*.ipynb"]
