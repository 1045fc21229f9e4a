import numpy as np
import pytest

from dadf.data import protocols
from dadf.data.protocols import PROTOCOLS, REQUIRED, ProtocolError, make_split, register
from dadf.data.types import PRIMARY, SECONDARY, Source, Split, Subset

N_CLASSES = 10


def _image_source(name: str, n_train: int, n_test: int, seed: int, parts=("train", "test")) -> Source:
    rng = np.random.default_rng(seed)
    sizes = {"train": n_train, "test": n_test}
    out = {}
    for part in parts:
        n = sizes[part]
        y = rng.permutation(np.arange(n) % N_CLASSES).astype(np.int64)
        out[part] = (rng.integers(0, 256, (n, 1, 8, 8), dtype=np.uint8), y)
    # two per-sample attributes (for the `attribute` protocol), about a third of the rows having each
    attributes = {part: (rng.random((len(y), 2)) < 0.3).astype(np.uint8) for part, (_, y) in out.items()}
    return Source(name, "image", out, tuple(f"c{i}" for i in range(N_CLASSES)), attribute_names=("hat", "beard"),
                  attributes=attributes)


@pytest.fixture
def src():
    return _image_source("a", 200, 100, seed=0)  # 20 train and 10 test rows per class


@pytest.fixture
def other():
    return _image_source("b", 50, 120, seed=1)


@pytest.fixture
def tab():
    rng = np.random.default_rng(2)
    y = np.zeros(200, dtype=np.int64)
    y[rng.choice(200, 20, replace=False)] = 1
    return Source("t", "tabular", {"all": (rng.normal(size=(200, 5)).astype(np.float32), y)}, ("inlier", "outlier"))


def triples(s: Subset) -> set:
    return set(zip(s.source.tolist(), s.part.tolist(), s.index.tolist()))


def check_well_formed(split, sources):
    """dtypes, references valid, cls consistent with the source, subsets pairwise disjoint."""
    for s in (split.train, split.val, split.test):
        assert s.source.dtype == np.int8 and s.part.dtype == object and s.index.dtype == np.int64
        assert s.label.dtype == np.int8 and s.truth.dtype == np.int8 and s.cls.dtype == np.int64
        assert len({len(s.source), len(s.part), len(s.index), len(s.label), len(s.truth), len(s.cls)}) == 1
        assert len(triples(s)) == len(s)  # no row twice
        for src_id, part, idx, cls in zip(s.source, s.part, s.index, s.cls):
            assert sources[src_id].parts[part][1][idx] == cls
    tr, va, te = triples(split.train), triples(split.val), triples(split.test)
    assert not (tr & va) and not (tr & te) and not (va & te)
    counts = split.counts()
    for name in ("train", "val", "test"):
        s = getattr(split, name)
        assert counts[name] == {
            "total": len(s),
            "normal": int((s.truth == 0).sum()),
            "anomalous": int((s.truth == 1).sum()),
            "labelled_anomalous": int((s.label == 1).sum()),
        }


def split_arrays(split):
    return [getattr(getattr(split, s), f) for s in ("train", "val", "test")
            for f in ("source", "part", "index", "label", "truth", "cls")]


def same_split(a, b) -> bool:
    return all(x.shape == y.shape and (x == y).all() for x, y in zip(split_arrays(a), split_arrays(b)))


# ------------------------------------------------------------------------------------------- loo / ovr


def test_loo_holds_out_target_class(src):
    split = make_split("loo", src, seed=0, params={"target_class": 3})
    check_well_formed(split, [src])
    assert len(split.train) == 180 and (split.train.cls != 3).all()
    assert (split.train.part == "train").all() and (split.train.label == 0).all() and (split.train.truth == 0).all()
    assert len(split.val) == 0
    assert len(split.test) == 100 and (split.test.part == "test").all()
    np.testing.assert_array_equal(split.test.truth, (split.test.cls == 3).astype(np.int8))
    np.testing.assert_array_equal(split.test.label, split.test.truth)
    assert split.test.truth.sum() == 10
    assert split.info == {"protocol": "loo", "params": {"target_class": 3, "val_fraction": 0.0, "val_anomalies": 0},
                          "seed": 0}


def test_ovr_trains_on_target_class_only(src):
    split = make_split("ovr", src, seed=0, params={"target_class": 7})
    check_well_formed(split, [src])
    assert len(split.train) == 20 and (split.train.cls == 7).all()
    assert split.counts()["test"] == {"total": 100, "normal": 10, "anomalous": 90, "labelled_anomalous": 90}


def test_target_class_by_name(src):
    by_name = make_split("ovr", src, seed=0, params={"target_class": "c7"})
    assert same_split(by_name, make_split("ovr", src, seed=0, params={"target_class": 7}))
    assert by_name.info["params"]["target_class"] == 7


@pytest.mark.parametrize("protocol,target,normal", [("loo", 2, lambda c: c != 2), ("ovr", 2, lambda c: c == 2)])
def test_validation_rows(src, protocol, target, normal):
    split = make_split(protocol, src, seed=0, params={"target_class": target, "val_fraction": 0.25, "val_anomalies": 4})
    check_well_formed(split, [src])
    n_normal = 180 if protocol == "loo" else 20
    n_val = round(0.25 * n_normal)
    assert len(split.train) == n_normal - n_val
    assert split.counts()["val"] == {"total": n_val + 4, "normal": n_val, "anomalous": 4, "labelled_anomalous": 4}
    val = split.val
    assert (val.part == "train").all()
    assert normal(val.cls[val.truth == 0]).all() and not normal(val.cls[val.truth == 1]).any()


# ----------------------------------------------------------------------------------- corruption / semisup


def test_corruption_adds_hidden_anomalies(src):
    split = make_split("corruption", src, seed=0, params={"target_class": 1, "p": 20})
    check_well_formed(split, [src])
    assert split.counts()["train"] == {"total": 24, "normal": 20, "anomalous": 4, "labelled_anomalous": 0}
    hidden = split.train.truth == 1
    assert (split.train.cls[hidden] != 1).all() and (split.train.part == "train").all()
    assert (split.train.label == 0).all()
    assert split.info["params"] == {"target_class": 1, "p": 20.0, "val_fraction": 0.0, "val_anomalies": 0}


def test_semisup_adds_labelled_anomalies(src):
    split = make_split("semisup", src, seed=0, params={"target_class": 1, "p": 10})
    check_well_formed(split, [src])
    assert split.counts()["train"] == {"total": 22, "normal": 20, "anomalous": 2, "labelled_anomalous": 2}
    np.testing.assert_array_equal(split.train.label, split.train.truth)


def test_semisup_small_p_can_round_to_zero(src):
    split = make_split("semisup", src, seed=0, params={"target_class": 1, "p": 0.1})
    assert split.counts()["train"]["anomalous"] == 0 and len(split.train) == 20


@pytest.mark.parametrize("protocol", ["corruption", "semisup"])
def test_p_counts_normals_left_after_validation(src, protocol):
    params = {"target_class": 4, "p": 20, "val_fraction": 0.25, "val_anomalies": 6}
    split = make_split(protocol, src, seed=3, params=params)
    check_well_formed(split, [src])  # includes: val anomalies disjoint from train anomalies
    assert split.counts()["train"]["normal"] == 15
    assert split.counts()["train"]["anomalous"] == 3  # round(0.20 * 15)
    assert split.counts()["val"] == {"total": 11, "normal": 5, "anomalous": 6, "labelled_anomalous": 6}


def test_too_many_anomalies_requested(src):
    with pytest.raises(ProtocolError, match="need 181 validation anomalies but only 180"):
        make_split("ovr", src, seed=0, params={"target_class": 0, "val_anomalies": 181})


# ------------------------------------------------------------------------------------------------- ood


def test_ood_mixes_secondary_anomalies(src, other):
    split = make_split("ood", src, seed=0, params={}, secondary=other)
    check_well_formed(split, [src, other])
    assert len(split.train) == 200 and (split.train.source == PRIMARY).all()
    test = split.test
    assert (test.truth == (test.source == SECONDARY)).all()
    assert split.counts()["test"] == {"total": 120, "normal": 100, "anomalous": 20, "labelled_anomalous": 20}
    assert (test.part[test.source == SECONDARY] == "test").all()
    assert split.counts()["val"] == {"total": 50, "normal": 0, "anomalous": 50, "labelled_anomalous": 50}
    assert (split.val.source == SECONDARY).all()
    assert split.info["params"] == {"ratio": 0.2, "val_anomalies": 50, "val_fraction": 0.0}


def test_ood_val_fraction_and_single_part_secondary(src):
    only_train = _image_source("n", 100, 0, seed=5, parts=("train",))
    split = make_split("ood", src, seed=0, params={"ratio": 0.5, "val_anomalies": 10, "val_fraction": 0.1},
                       secondary=only_train)
    check_well_formed(split, [src, only_train])
    assert (split.test.part[split.test.source == SECONDARY] == "train").all()
    assert split.counts()["test"]["anomalous"] == 50
    assert len(split.train) == 180
    assert split.counts()["val"] == {"total": 30, "normal": 20, "anomalous": 10, "labelled_anomalous": 10}


def test_ood_errors(src, other):
    with pytest.raises(ProtocolError, match="secondary"):
        make_split("ood", src, seed=0, params={})
    small = _image_source("s", 10, 0, seed=1, parts=("train",))
    big = Source("big", "image", {"test": (np.zeros((5, 3, 16, 16), np.uint8), np.zeros(5, np.int64))}, ("x",))
    with pytest.raises(ProtocolError) as e:
        make_split("ood", src, seed=0, params={}, secondary=big)
    assert "(1, 8, 8)" in str(e.value) and "(3, 16, 16)" in str(e.value)
    assert "size" in str(e.value) and "channels" in str(e.value)
    with pytest.raises(ProtocolError) as e:
        make_split("ood", src, seed=0, params={}, secondary=small)
    assert "10 rows" in str(e.value) and "70" in str(e.value)


# --------------------------------------------------------------------------------------------- tabular


def test_tabular(tab):
    split = make_split("tabular", tab, seed=0, params={})
    check_well_formed(split, [tab])
    y = tab.parts["all"][1]
    drawn = 100  # train_fraction 0.5 of 200, before its anomalies are dropped
    test = split.test
    assert len(test) == 200 - drawn
    assert (split.train.truth == 0).all() and (split.train.cls == 0).all()
    train_anoms = int(y.sum()) - int(test.truth.sum())
    assert len(split.train) == drawn - train_anoms
    np.testing.assert_array_equal(test.truth, y[test.index].astype(np.int8))
    np.testing.assert_array_equal(test.label, test.truth)
    assert len(split.val) == 0
    assert split.info["anomaly_ratio"] == pytest.approx(0.1)
    assert split.info["params"] == {"train_fraction": 0.5, "top_k_rule": "percentile"}  # the metrics' rule, recorded


def test_tabular_needs_all_part(src):
    with pytest.raises(ProtocolError, match="'all'"):
        make_split("tabular", src, seed=0, params={})


# ------------------------------------------------------------------------------------------------ gpnd


def test_gpnd_pools_parts(src):
    split = make_split("gpnd", src, seed=0, params={"target_class": 5})
    check_well_formed(split, [src])
    assert len(split.train) == 24 and (split.train.cls == 5).all()  # 0.8 of the 30 pooled normals
    assert split.counts()["test"] == {"total": 12, "normal": 6, "anomalous": 6, "labelled_anomalous": 6}
    assert (split.test.cls[split.test.truth == 1] != 5).all()
    both = np.concatenate([split.train.part, split.test.part])
    assert set(both) == {"train", "test"}
    assert len(split.val) == 0


# ------------------------------------------------------------------------------------------ determinism

RANDOM_CASES = {
    "loo": {"target_class": 0, "val_fraction": 0.2, "val_anomalies": 3},
    "ovr": {"target_class": 0, "val_fraction": 0.2, "val_anomalies": 3},
    "corruption": {"target_class": 0, "p": 25},
    "semisup": {"target_class": 0, "p": 25},
    "ood": {},
    "tabular": {},
    "gpnd": {"target_class": 0},
    "attribute": {"attribute": "hat", "val_fraction": 0.2, "val_anomalies": 3},
}


def test_every_protocol_has_a_case():
    assert set(RANDOM_CASES) == set(PROTOCOLS)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_deterministic(protocol, src, other, tab):
    source = tab if protocol == "tabular" else src
    secondary = other if protocol == "ood" else None

    def split(seed):
        return make_split(protocol, source, seed=seed, params=RANDOM_CASES[protocol], secondary=secondary)

    a = split(0)
    check_well_formed(a, [source, other])
    assert same_split(a, split(0))
    assert not same_split(a, split(1))
    assert a.info["seed"] == 0 and a.info["protocol"] == protocol


def test_protocols_draw_differently():
    # Seeding with the protocol too: the same seed does not give two protocols the same draws.
    source = _image_source("a", 200, 100, seed=0)
    params = {"target_class": 0, "p": 50, "val_fraction": 0.0, "val_anomalies": 0}
    c = make_split("corruption", source, seed=0, params=params)
    s = make_split("semisup", source, seed=0, params=params)
    assert not np.array_equal(c.train.index, s.train.index)


# ----------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "protocol,params,pattern",
    [
        ("lol", {}, r"unknown protocol 'lol'.*loo.*gpnd"),
        ("loo", {"target_class": 0, "foo": 1}, r"unknown parameter\(s\) \['foo'\].*target_class"),
        ("loo", {}, r"needs parameter\(s\) \['target_class'\]"),
        ("corruption", {"target_class": 0}, r"needs parameter\(s\) \['p'\]"),
        ("ovr", {"target_class": 10}, r"target_class=10 .*0\.\.9"),
        ("ovr", {"target_class": -1}, r"target_class=-1 .*0\.\.9"),
        ("ovr", {"target_class": "nope"}, r"target_class='nope'"),
        ("ovr", {"target_class": True}, r"target_class=True"),
        ("semisup", {"target_class": 0, "p": -1}, r"p=-1 .*>= 0"),
        ("ovr", {"target_class": 0, "val_fraction": 1.0}, r"val_fraction=1.0 .*0 <= x < 1"),
        ("ovr", {"target_class": 0, "val_anomalies": 2.5}, r"val_anomalies=2.5 .*integers >= 0"),
        ("gpnd", {"target_class": 0, "train_fraction": 0}, r"train_fraction=0 .*0 < x < 1"),
        ("ood", {"ratio": 0}, r"ratio=0 .*> 0"),
    ],
)
def test_errors_name_bad_value_and_choices(src, other, protocol, params, pattern):
    with pytest.raises(ProtocolError, match=pattern):
        make_split(protocol, src, seed=0, params=params, secondary=other)


def test_bad_seed(src):
    with pytest.raises(ProtocolError, match="seed=-1"):
        make_split("ovr", src, seed=-1, params={"target_class": 0})


def test_p_uses_python_round(src):
    # 12.5 % of 20 normals is 2.5; Python's round (half to even) gives 2.
    split = make_split("semisup", src, seed=0, params={"target_class": 0, "p": 12.5})
    assert split.counts()["train"]["anomalous"] == 2


def test_protocol_error_is_value_error():
    assert issubclass(ProtocolError, ValueError)


def test_params_not_mutated(src):
    params = {"target_class": 1}
    make_split("ovr", src, seed=0, params=params)
    assert params == {"target_class": 1}


# --------------------------------------------------------------------------------------------- registry


@pytest.fixture
def registry(monkeypatch):
    """Protocols registered by the test are gone after it."""
    monkeypatch.setattr(protocols, "PROTOCOLS", dict(PROTOCOLS))


def _check_keep(value, source):
    if not isinstance(value, int) or not 0 < value <= len(source.classes):
        raise ProtocolError(f"keep={value!r} is invalid; valid values: 1..{len(source.classes)}")
    return value


def test_a_registered_protocol_splits_with_its_own_parameter(src, registry):
    @register("first_k", layout="per_class", params={"keep": REQUIRED}, checks={"keep": _check_keep})
    def _first_k(rng, source, params, secondary):
        """Classes below `keep` are normal: train on them, validate on the other train rows, test on the test part."""
        def rows(part, which):
            y = source.parts[part][1]
            index = np.flatnonzero(which(y))
            truth = (y[index] >= params["keep"]).astype(np.int8)
            return Subset(np.zeros(len(index), np.int8), np.full(len(index), part, dtype=object), index, truth, truth,
                          y[index])

        keep = params["keep"]
        return Split(train=rows("train", lambda y: y < keep), val=rows("train", lambda y: y >= keep),
                     test=rows("test", lambda y: y >= 0))

    split = make_split("first_k", src, seed=3, params={"keep": 2})
    check_well_formed(split, [src])
    assert set(split.train.cls) == {0, 1} and split.counts()["test"]["anomalous"] == 80
    assert split.info == {"protocol": "first_k", "params": {"keep": 2}, "seed": 3}
    assert protocols.get("first_k").layout == "per_class"
    with pytest.raises(ProtocolError, match=r"keep=11 is invalid; valid values: 1\.\.10"):
        make_split("first_k", src, seed=0, params={"keep": 11})
    with pytest.raises(ProtocolError, match=r"needs parameter\(s\) \['keep'\]"):
        make_split("first_k", src, seed=0, params={})


def test_registering_is_checked(registry):
    with pytest.raises(ValueError, match=r"protocol 'odd': no check for parameter\(s\) \['width'\]"):
        register("odd", layout="per_class", params={"width": 3})
    with pytest.raises(ValueError, match="'ovr' is registered twice"):
        register("ovr", layout="per_class", params={})(lambda rng, source, params, secondary: None)
    with pytest.raises(ProtocolError, match=r"unknown protocol 'nope'; valid choices: \['loo', 'ovr', 'ood'"):
        protocols.get("nope")
