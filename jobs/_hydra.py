"""Shared by the Hydra entry scripts: where the configs are, and clearer errors for bad keys."""
from __future__ import annotations

import re
from pathlib import Path

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")


def explain_bad_key(error: Exception, compose) -> str:
    """Hydra says a key is not in the config; add the keys that are, so the fix is one look away."""
    msg = str(error)
    m = re.search(r"Could not override '([\w.]+)'", msg) or re.search(r"Key '(\w+)' is not in struct", msg)
    if not m:
        return msg
    parent = m.group(1).rsplit(".", 1)[0] if "." in m.group(1) else ""
    try:
        node = compose([])
        for part in filter(None, parent.split(".")):
            node = node[part]
        return f"{msg}\nvalid keys under '{parent or '<root>'}': {', '.join(sorted(node.keys()))}"
    except Exception:  # noqa: BLE001 -- the original message is still useful on its own
        return msg
