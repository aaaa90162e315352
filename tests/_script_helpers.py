"""Load a preparation script of ``data_scripts/`` as a module, for the tests of the real-data path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SCRIPTS = Path(__file__).resolve().parents[1] / "data_scripts"


def load_script(name: str) -> ModuleType:
    """``data_scripts/<name>.py`` imported as a module (its folder on ``sys.path`` for ``_common``)."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
