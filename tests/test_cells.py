import pytest
from hydra.errors import ConfigCompositionException

from dadf.grid.cells import expand


def _cells(composer, *overrides):
    return expand(composer(list(overrides)), list(overrides), composer)


def test_quickstart_expands_to_methods_times_classes(composer, dirs):
    cells = _cells(composer, *dirs)
    assert len(cells) == 5 * 10
    assert cells[0].id.startswith("ae-digits-ovr-c0-s0-")
    assert {c.cfg.protocol.target_class for c in cells} == set(range(10))
    assert all(c.dir.parent.name == "quickstart" for c in cells)


def test_cell_ids_are_stable_and_follow_the_config(composer, dirs):
    a = [c.id for c in _cells(composer, *dirs)]
    assert a == [c.id for c in _cells(composer, *dirs)]
    # where the data lives or how progress is shown does not change what a cell computes
    assert a == [c.id for c in _cells(composer, *dirs, "dataset.root=/elsewhere", "trainer.progress=false")]
    changed = [c.id for c in _cells(composer, *dirs, "trainer.steps=7")]
    assert [i.rsplit("-", 1)[0] for i in changed] == [i.rsplit("-", 1)[0] for i in a]
    ae_cells = [i for i in changed if i.startswith("ae-")]
    assert not set(ae_cells) & set(a)


def test_no_field_marked_outside_the_identity_changes_an_id(composer, dirs):
    """The schemas (dadf/config.py) mark what says where things are or how they are watched; those fields, and only
    those, leave a cell's id as it is."""
    import dataclasses

    from dadf import config

    marked = {"dataset.root=/elsewhere", "dataset.download=true", "trainer.progress=false", "trainer.num_threads=3",
              "trainer.log_every=7", "trainer.device=cpu", "trainer.sync_every=3", "trainer.data_on_device=false",
              "trainer.tracker=none", "trainer.memory_budget=0.9", "trainer.data_workers=0"}
    assert {o.split("=")[0] for o in marked} == {f"{group}.{f.name}" for group in ("dataset", "trainer")
                                                 for f in dataclasses.fields(config.schema(group))
                                                 if f.metadata.get("identity") is False}
    one = [*dirs, "method=ae", "protocol.target_class=0"]
    ident = _cells(composer, *one)[0].id
    assert [_cells(composer, *one, o)[0].id for o in sorted(marked)] == [ident] * len(marked)
    assert _cells(composer, *one, "trainer.compile=true")[0].id != ident


def test_user_overrides_narrow_the_grid(composer, dirs):
    cells = _cells(composer, *dirs, "method=kde", "protocol.target_class=3", "seed=2")
    assert len(cells) == 1
    assert cells[0].id.startswith("kde-digits-ovr-c3-s2-")
    assert cells[0].cfg.seed == 2


def test_axes_and_secondary_dataset(composer, dirs):
    cells = _cells(composer, *dirs, "grid=tabular")
    assert {c.cfg.dataset.name for c in cells} == {"kdd99", "arrhythmia", "thyroid"}
    grid = composer(["grid=tabular"]).grid
    assert len(cells) == len(grid.methods) * 3 * len(grid.seeds)
    ood = _cells(composer, *dirs, "grid=ood_mnist_notmnist", "dataset.root=/data")
    assert ood[0].cfg.protocol.secondary.name == "notmnist"
    assert ood[0].cfg.protocol.secondary.root == "/data"  # inherits the dataset's root
    assert "-ood-notmnist-" in ood[0].id


def test_bad_key_is_refused(composer):
    with pytest.raises(ConfigCompositionException, match="trainer.nope"):
        composer(["trainer.nope=1"])
