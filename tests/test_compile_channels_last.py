"""trainer.channels_last: a per-method, per-device default written in dadf/config.py (never decided at run time), an
explicit value wins, null keeps the ids of cells that had false; trainer.compile trains to the same losses as eager."""
from __future__ import annotations

import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from dadf import config
from dadf.grid.cells import expand
from dadf.grid.launch import launch


def _cells(composer, overrides):
    return expand(composer(overrides), overrides, composer)


@pytest.mark.parametrize("value, method, device, expected", [
    (None, "ama", "cpu", False),      # CPU keeps today's numbers for every method
    (None, "ama", "cuda", True),      # the paper methods' conv nets on GPU
    (None, "piad", "cuda", True),
    (None, "ae", "cuda", False),      # baselines: not listed
    (True, "ae", "cpu", True),        # an explicit value wins
    (False, "ama", "cuda", False),
])
def test_channels_last_default_per_method_and_device(value, method, device, expected):
    tcfg = OmegaConf.create({"channels_last": value})
    assert config.channels_last(tcfg, method, device) is expected


def test_null_channels_last_keeps_the_ids_of_cells_that_had_false(composer, dirs):
    base = [*dirs, "grid.methods=[ae]", "grid.classes=[0]"]
    default = _cells(composer, base)[0].id
    assert composer(base).trainer.channels_last is None
    assert _cells(composer, [*base, "trainer.channels_last=false"])[0].id == default
    assert _cells(composer, [*base, "trainer.channels_last=true"])[0].id != default


def test_the_channels_last_used_is_recorded(composer, dirs):
    overrides = [*dirs, "trainer.steps=4", "trainer.batch_size=16", "launcher=debug", "grid.methods=[ae]",
                 "grid.classes=[0]", "trainer.channels_last=true"]
    cells = _cells(composer, overrides)
    assert launch(cells, composer(overrides).launcher).complete
    assert json.loads((cells[0].dir / "metrics.json").read_text())["hardware"]["channels_last"] is True


def _losses(cell) -> list[float]:
    """Every logged loss of every step, in order (a method names its own losses: ae logs ``rec``)."""
    rows = [json.loads(line) for line in (cell.dir / "log.jsonl").read_text().splitlines()]
    return [v for r in rows for k, v in sorted(r.items()) if k not in ("step", "epoch")]


@pytest.mark.slow
def test_compiled_and_eager_training_agree(composer, dirs):
    """The same cell trained eagerly and under torch.compile (inductor): the logged losses of every step and the
    test scores agree to float32 rounding (inductor fuses and reorders float ops, so not bit-exact)."""
    base = [*dirs, "trainer.steps=6", "trainer.log_every=1", "trainer.batch_size=32", "launcher=debug",
            "grid.methods=[ae]", "grid.classes=[0]"]
    from torch._dynamo.utils import counters

    counters.clear()
    runs = {}
    for compiled in (False, True):
        overrides = [*base, f"trainer.compile={str(compiled).lower()}"]
        cells = _cells(composer, overrides)
        summary = launch(cells, composer(overrides).launcher)
        assert summary.complete, summary
        with np.load(cells[0].dir / "scores.npz") as z:
            runs[compiled] = (_losses(cells[0]), z["scores"].copy())
        assert (counters["stats"]["unique_graphs"] > 0) is compiled  # dynamo traced the nets only when asked
    (eager_loss, eager_scores), (comp_loss, comp_scores) = runs[False], runs[True]
    assert len(eager_loss) >= 6 and len(comp_loss) == len(eager_loss)
    np.testing.assert_allclose(comp_loss, eager_loss, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(comp_scores, eager_scores, rtol=1e-3, atol=1e-5)
