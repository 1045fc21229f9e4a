"""The command-line programs, one module per command: ``dadf-launch`` (launch), ``dadf-train`` (train),
``dadf-status`` (status), ``dadf-aggregate`` (aggregate), ``dadf-build-shards`` (build_shards). The ``jobs/*.py``
scripts run the same ``main``.

What a command writes, and where:
- the results a user asked for (tables, ``[i/n] done ...`` lines, state counts, job ids) are printed to stdout,
  as they are: users and tests read them;
- a refusal is one ``error: ...`` line per problem on stderr, with a non-zero exit code;
- everything else (notes, warnings, "stopping ...") goes through ``logging.getLogger(__name__)`` in the ``dadf``
  namespace. Library code never configures logging; each command calls :func:`setup_logging` once. Without it
  (tests, notebooks) Python shows warnings only.
"""
from __future__ import annotations

import logging
import sys

from tqdm.auto import tqdm


class _TqdmHandler(logging.StreamHandler):
    """Writes between progress bars (tqdm.write), so a note never cuts a bar in half."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 -- logging's own policy: report, never raise
            self.handleError(record)


def setup_logging() -> None:
    """The ``dadf`` logger at INFO, plain messages on stderr. Call it inside a Hydra task: Hydra's
    ``job_logging: disabled`` disables every logger that exists when the task starts."""
    root = logging.getLogger("dadf")
    for name in list(logging.root.manager.loggerDict):
        if name == "dadf" or name.startswith("dadf."):
            logging.getLogger(name).disabled = False
    handler = _TqdmHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False  # Hydra's root logger is set to ERROR: keep the notes out of it
