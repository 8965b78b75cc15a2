"""Run configuration in sections: each owns its keys, defaults, help and checks; an app declares its sections.

See :mod:`.section` (the section base), :mod:`.schema` (an app's sections, parsing, the key
reference) and :mod:`.common` (the keys every app declares). Method sections live with their
method (``flwr_privshare.visualmixer.section``, ``flwr_privshare.dp.section``, ...).
"""

from .checks import ConfigError
from .common import CommonSection
from .schema import AppSchema, RunConfig
from .section import RunConfigValue, Section, setting

__all__ = ["AppSchema", "CommonSection", "ConfigError", "RunConfig", "RunConfigValue", "Section", "setting"]
