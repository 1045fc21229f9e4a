"""Every registered method trains and separates an easy synthetic problem (a new method is tested for free)."""
import importlib.util

import pytest
import torch
from conftest import run_one_cell

from dadf.methods import available, get_method

# The adversarial methods' defaults (5 critic steps with a gradient penalty) cost minutes here; one critic step per
# update still has to separate this easy problem.
CHEAP = {"ama": ["method.critic_steps=1"], "simplex_ae": ["method.critic_steps=1"]}
# PIAD needs 16 px images (VGG relu4_2) and ~30 E/G iterations to separate them: minutes through the grid path here.
COVERED = {"piad": "separation is tested on 16 px synthetic images in tests/test_piad.py"}
if importlib.util.find_spec("pyod") is None:
    COVERED["pyod"] = "PyOD (the optional extra dadf[pyod]) is not installed: pip install -e '.[pyod]'"


@pytest.fixture(scope="module")
def shards_dir(tmp_path_factory):
    """One shards folder for the module: the first cell builds the synthetic shards, the others read them."""
    return tmp_path_factory.mktemp("shards")


@pytest.mark.parametrize("method", [pytest.param(m, marks=pytest.mark.skip(reason=COVERED[m])) if m in COVERED else m
                                    for m in available()])
def test_method_separates_synthetic_anomalies(method, composer, tmp_path, shards_dir):
    dirs = [f"runs_dir={tmp_path / 'runs'}", f"shards_dir={shards_dir}"]
    overrides = [*dirs, "dataset=synthetic", "launcher=debug", f"grid.methods=[{method}]", "grid.classes=[2]",
                 "trainer.steps=60", "trainer.batch_size=32", f"method={method}", *CHEAP.get(method, [])]
    auroc = run_one_cell(composer, overrides)[1]["metrics"]["auroc"]
    assert auroc > 0.9, f"{method}: AUROC {auroc:.3f} on an easy synthetic problem"


def test_unknown_method_names_the_registered_ones():
    with pytest.raises(KeyError, match="registered methods: .*ae"):
        get_method("nope")


def test_scores_do_not_depend_on_batch_composition(composer):
    """Evaluation runs in eval() mode: BatchNorm uses training statistics, so a sample's score is its own."""
    from accelerate import Accelerator

    from dadf.methods.base import DataInfo

    cfg = composer(["method=ae"]).method
    m = get_method("ae")(cfg, DataInfo("image", (1, 16, 16), 10), Accelerator(cpu=True), 0)
    x = torch.randn(64, 1, 16, 16).clamp(-1, 1)
    for _ in range(3):
        m.train_step({"x": x}, 0)
    assert torch.allclose(m.score(x)[:5], m.score(x[:5]), atol=1e-6)
    assert all(n.training for n in m.nets.values())  # score() restores train mode


def test_emitted_files_are_handed_over_once_in_order_and_stay_inside_the_cell():
    from accelerate import Accelerator

    from dadf.methods.base import DataInfo, Method

    m = Method(None, DataInfo("tabular", (2,), 10), Accelerator(cpu=True), 0)
    first, second = (lambda f: f.write(b"1")), (lambda f: f.write(b"2"))
    m.emit("tasks/a.pt", first)
    m.emit("b.png", second)
    assert m.take_artifacts() == [("tasks/a.pt", first), ("b.png", second)]
    assert m.take_artifacts() == []
    for outside in ("/tmp/a.pt", "../a.pt", "tasks/../../a.pt"):
        with pytest.raises(ValueError, match="inside the cell folder"):
            m.emit(outside, first)
