"""coremtl_lite: a small, readable implementation of CORE-MTL (ICML 2026) for learning and research.

In every docstring and comment a bare "Eq. N" is the CORE-MTL paper's equation N, stated on the docs
page docs/method.md under the label ``eq-N``; another paper's equation carries that paper's short name
("MT-CRL Eq. 3"), listed on the same page.
"""

from coremtl_lite.config import Config, ConfigError, active_profile, get_config
from coremtl_lite.runtime import get_device, seed_everything

__version__ = "0.1.0"

__all__ = [
    "Config",
    "ConfigError",
    "active_profile",
    "get_config",
    "get_device",
    "seed_everything",
    "__version__",
]
