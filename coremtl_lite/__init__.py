"""coremtl_lite: a small, readable implementation of CORE-MTL (ICML 2026) for learning and research."""

from coremtl_lite.config import Config, ConfigError, active_profile, get_config
from coremtl_lite.runtime import get_device, seed_everything

__version__ = "0.1.0"

__all__ = ["Config", "ConfigError", "active_profile", "get_config", "get_device", "seed_everything",
           "__version__"]
