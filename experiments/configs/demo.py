"""The built-in synthetic demo corpus (what `sejax train --workdir W` uses with no config)."""

from sejax.configs import default


def get_config():
    return default.get_config()
