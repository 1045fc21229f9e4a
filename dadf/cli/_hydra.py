"""Shared by the Hydra commands (launch, build_shards): where the configs are, and errors for bad keys that list
the valid ones."""
from __future__ import annotations

import re
import sys

from dadf.config import CONFIG_DIR  # importing dadf.config registers the schemas


def _valid_keys_message(msg: str, overrides: list[str], compose) -> str:
    m = re.search(r"Could not override '([\w.]+)'", msg) or re.search(r"full_key: ([\w.]+)", msg)
    if not m:
        return msg
    key = m.group(1)
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    try:
        node = compose([o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key])
        for part in filter(None, parent.split(".")):
            node = node[part]
        return (f"'{key}' is not a config key. Valid keys under '{parent or '<root>'}': "
                f"{', '.join(sorted(node.keys()))}. (To add a new key on purpose, write +{key}=...)")
    except Exception:  # noqa: BLE001 -- fall back to Hydra's own message
        return msg


def check_overrides(argv: list[str]) -> None:
    """Compose once before Hydra does, so a bad key fails with the list of valid keys instead of a bare refusal."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException
    from omegaconf.errors import ValidationError

    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        def comp(o):
            return compose(config_name="config", overrides=o)

        try:
            comp(overrides)
        except ConfigCompositionException as e:
            if isinstance(e.__cause__, ValidationError):  # a value its schema's type refuses: the override names it
                sys.exit(f"error: {e}: {str(e.__cause__).splitlines()[0]}")
            text = f"{e}\n{e.__cause__ or ''}"
            sys.exit(f"error: {_valid_keys_message(text, overrides, comp)}")
        except Exception:  # noqa: BLE001 -- other problems (unknown group option...) get Hydra's own message
            pass
    GlobalHydra.instance().clear()
