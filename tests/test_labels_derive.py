"""`rad3d labels derive | split` on a small phantom set: derivation recovers the planted findings (from the
vocabulary and, for findings left out of it, from noun phrases), the stratified split keeps every label in
every split with no patient on two sides, and bad input fails with one line and writes nothing."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import cli
from engine.data import patient_id, resolve
from engine.errors import ConfigError
from engine.labels import ct_rate, load_label_set
from study.stratified_split import stratified_split

# Findings left out of the vocabulary: derivation must find them as noun phrases.
LEFT_OUT = ("Hiatal hernia", "Emphysema", "Bronchiectasis", "Consolidation", "Atelectasis", "Pleural effusion",
            "Lymphadenopathy")
MIN_COUNT = 3
# Phantom reports name a present finding with one of its label-set synonyms and deny an absent one in a
# plainly negated sentence (engine/synth/reports.py), so agreement should be near exact; the floor leaves
# room for one disagreement in ten (chunking, lemmas, scope) without letting a wrong concept through.
FLOOR = 0.9


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    from engine.synth.config import SynthConfig
    from engine.synth.writer import write_dataset

    root = tmp_path_factory.mktemp("labels") / "data"
    # Few phantoms (each takes about a second to draw), each finding planted in about half of them, so every
    # finding is frequent enough to be kept and to sit in all three splits.
    cfg = SynthConfig(n=16, seed=4, scale=32.0, prevalence={n: 0.5 for n in ct_rate().names}, normal_fraction=0.0)
    return write_dataset(cfg, root, force=True, progress=False)


@pytest.fixture(scope="module")
def partial_vocabulary(tmp_path_factory):
    full = ct_rate()
    path = tmp_path_factory.mktemp("vocab") / "partial.json"
    path.write_text(json.dumps({"name": "partial", "findings": [
        {"name": n, "synonyms": list(full.synonyms[n])} for n in full.names if n not in LEFT_OUT]}))
    return path


@pytest.fixture(scope="module")
def derived(phantoms, partial_vocabulary, tmp_path_factory):
    out = tmp_path_factory.mktemp("derived")
    argv = ["labels", "derive", "--data", str(phantoms), "--min-count", str(MIN_COUNT), "--vocabulary",
            str(partial_vocabulary), "--out", str(out / "set.json"), "--out-csv", str(out / "labels.csv")]
    assert cli.main(argv) == 0
    return out


def _one_line_error(capsys, argv) -> str:
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_derivation_recovers_the_planted_findings(phantoms, derived):
    labels = load_label_set(derived / "set.json")  # the reader takes the derived set (counts and all)
    written = json.loads((derived / "set.json").read_text())["findings"]
    csv = pd.read_csv(derived / "labels.csv")
    truth = pd.read_csv(phantoms / "labels.csv").set_index("VolumeName").loc[csv.VolumeName]
    assert list(csv.columns) == ["VolumeName", *labels.names]
    assert [f["count"] for f in written] == [int(csv[n].sum()) for n in labels.names]
    source = {f["name"]: f["source"] for f in written}
    print(f"\n{'finding':36s} {'source':20s} {'truth':>5s} {'derived':>7s} precision recall")
    for finding in ct_rate().names:
        t = truth[finding].to_numpy().astype(bool)
        if t.sum() < MIN_COUNT:
            continue  # below the frequency cut by design
        assert finding in labels.names, f"{finding} (positive in {t.sum()} phantoms) was not derived"
        d = csv[finding].to_numpy().astype(bool)
        precision, recall = (t & d).sum() / d.sum(), (t & d).sum() / t.sum()
        print(f"{finding:36s} {source[finding]:20s} {t.sum():5d} {d.sum():7d} {precision:9.3f} {recall:6.3f}")
        assert precision >= FLOOR and recall >= FLOOR, finding
        # left out of the vocabulary: found as a noun phrase, named as the reports name it
        assert (source[finding] == "noun phrase") == (finding in LEFT_OUT)
    # nothing else: anatomy ("trachea", "thoracic aorta") is never denied by an absence trigger
    assert set(labels.names) <= set(ct_rate().names), set(labels.names) - set(ct_rate().names)


def test_split_keeps_every_label_in_every_split_and_patients_on_one_side(phantoms, derived, tmp_path, capsys):
    out = tmp_path / "splits.csv"
    argv = ["labels", "split", "--data", str(phantoms), "--labels-csv", str(derived / "labels.csv"),
            "--fractions", "0.6", "0.2", "0.2", "--seed", "0", "--out", str(out)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    labels = load_label_set(derived / "set.json")
    assert all(n[:32] in printed for n in labels.names)  # a prevalence row per label
    splits = pd.read_csv(out)
    dataset = resolve({"root": str(phantoms), "labels_csv": str(derived / "labels.csv"), "splits_csv": str(out)},
                      label_set=labels, section=None)  # the dataset takes the written splits.csv
    assert sorted(splits.VolumeName) == sorted(c.volume_name for c in dataset)
    for split in ("train", "valid", "test"):
        cases = dataset.split(split)
        positives = np.array([c.labels for c in cases]).sum(axis=0)
        assert (positives > 0).all(), (split, dict(zip(labels.names, positives.tolist())))
    sides: dict[str, set[str]] = {}
    for c in dataset:
        sides.setdefault(patient_id(c.volume_name), set()).add(c.split)
    assert all(len(s) == 1 for s in sides.values())


def test_stratification_keeps_prevalence_closer_than_random_patient_splits():
    rng = np.random.default_rng(0)
    n_patients, prevalence = 120, np.array([0.05, 0.08, 0.1, 0.2, 0.3, 0.5])
    names, rows = [], []
    for p in range(n_patients):
        y = rng.random(len(prevalence)) < prevalence
        for v in range(1 + int(rng.random() < 0.3)):  # some patients have two volumes
            names.append(f"train_{p}_a_{v + 1}.nii.gz")
            rows.append(y)
    matrix = np.array(rows, dtype=np.int8)

    def spread(assign) -> float:  # mean over labels of the largest gap between a split's and the overall prevalence
        parts = [[i for i, n in enumerate(names) if assign[n] == s] for s in ("train", "valid", "test")]
        return float(np.mean(np.max([np.abs(matrix[p].mean(0) - matrix.mean(0)) for p in parts], axis=0)))

    split = stratified_split(names, matrix, [f"L{j}" for j in range(len(prevalence))], (0.7, 0.15, 0.15), seed=0)
    assert len({(patient_id(n), split.splits[n]) for n in names}) == len({patient_id(n) for n in names})
    random_spreads = []
    for seed in range(20):
        order = np.random.default_rng(seed).permutation(n_patients)
        side = {f"train_{p}": ("train" if r < 84 else "valid" if r < 102 else "test") for r, p in enumerate(order)}
        random_spreads.append(spread({n: side[patient_id(n)] for n in names}))
    assert spread(split.splits) < np.median(random_spreads), (spread(split.splits), random_spreads)


def test_bad_label_sets_fail_in_one_line(tmp_path, phantoms, derived, capsys):
    for names, problem in ((["Nodule", "Effusion", "nodule "], "repeats the finding name"),
                           (["Nodule", " "], "empty name")):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"name": "bad", "findings": [{"name": n, "synonyms": []} for n in names]}))
        with pytest.raises(ConfigError, match=problem):
            load_label_set(bad)
        out = tmp_path / "splits.csv"
        err = _one_line_error(capsys, ["labels", "split", "--data", str(phantoms), "--label-set", str(bad),
                                       "--labels-csv", str(derived / "labels.csv"), "--out", str(out)])
        assert str(bad) in err and problem in err and not out.exists()


def test_bad_derive_and_split_input_fails_in_one_line_and_writes_nothing(tmp_path, phantoms, derived, capsys):
    out_json, out_csv = tmp_path / "set.json", tmp_path / "labels.csv"
    err = _one_line_error(capsys, ["labels", "derive", "--data", str(phantoms), "--min-count", "1000",
                                   "--out", str(out_json), "--out-csv", str(out_csv)])
    assert "--min-count 1000 leaves no label" in err and not out_json.exists() and not out_csv.exists()
    # the label set cannot be written (its folder is a file): neither output appears
    (tmp_path / "a_file").write_text("")
    err = _one_line_error(capsys, ["labels", "derive", "--data", str(phantoms), "--min-count", str(MIN_COUNT),
                                   "--out", str(tmp_path / "a_file" / "set.json"), "--out-csv", str(out_csv)])
    assert "cannot write the label set" in err and not out_csv.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]

    out = tmp_path / "splits.csv"
    base = ["labels", "split", "--data", str(phantoms), "--labels-csv", str(derived / "labels.csv"), "--out", str(out)]
    err = _one_line_error(capsys, [*base, "--fractions", "0.7", "0.2", "0.2"])
    assert "must sum to 1" in err and not out.exists()

    # a label with two positive patients cannot sit in three splits: named, with its count
    rare = pd.read_csv(derived / "labels.csv")
    rare["Rare finding"] = 0
    first_two = rare.VolumeName.map(patient_id).drop_duplicates().index[:2]
    rare.loc[rare.VolumeName.map(patient_id).isin(rare.VolumeName[first_two].map(patient_id)), "Rare finding"] = 1
    rare.to_csv(tmp_path / "rare.csv", index=False)
    err = _one_line_error(capsys, ["labels", "split", "--data", str(phantoms), "--labels-csv",
                                   str(tmp_path / "rare.csv"), "--out", str(out)])
    assert "'Rare finding' (2)" in err and "too few positive patients" in err and not out.exists()


def test_noun_phrases_are_counted_negation_aware_and_merged_by_lemma(tmp_path):
    from study.label_derivation import derive_labels

    vocab = tmp_path / "vocab.json"  # a vocabulary that knows only nodules
    vocab.write_text(json.dumps({"name": "v", "findings": [{"name": "Lung nodule", "synonyms": ["nodule"]}]}))
    texts = [
        "Small right pleural effusions are seen. The trachea is patent. A filling defect is present.",
        "Pleural effusion on the left. The trachea is patent. No filling defect was detected.",
        "Bilateral pleural effusion. The trachea is patent. A lung nodule is seen.",
        "No pleural effusion was detected. The trachea is patent. Filling defects in both lower lobes.",
        "There is no pleural effusion. Possible filling defect. A nodule is seen in the right lung.",
    ]
    derived = derive_labels([f"v{i}" for i in range(len(texts))], texts, min_count=2, vocabulary_sets=[str(vocab)])
    counts = {c.name: (c.positive, c.uncertain, c.negative) for c in derived.kept}
    # "small right pleural effusions", "pleural effusion", "bilateral pleural effusion": one concept
    assert counts["Pleural effusion"] == (3, 0, 2)
    # "filling defects" merged with "filling defect"; the hedged one is uncertain, the denied one negative
    assert counts["Filling defect"] == (2, 1, 1)
    assert counts["Lung nodule"] == (2, 0, 0)
    # the trachea is in every report but never said to be absent: anatomy, not a finding
    assert "Trachea" not in counts and len(counts) == 3
    assert derived.matrix[:, derived.label_set.index("Pleural effusion")].tolist() == [1, 1, 1, 0, 0]


def test_findings_of_two_vocabularies_naming_one_concept_become_one_label(tmp_path):
    from study.label_derivation import derive_labels, vocabulary

    other = tmp_path / "other.json"
    other.write_text(json.dumps({"name": "other", "findings": [
        {"name": "Pulmonary nodules", "synonyms": ["pulmonary nodule", "lung nodules"]},
        {"name": "Pulmonary embolism", "synonyms": ["pulmonary emboli", "filling defect"]}]}))
    vocab, source = vocabulary(["ct-rate", str(other)])
    assert "Pulmonary nodules" not in vocab.names and "Pulmonary nodules" in vocab.synonyms["Lung nodule"]
    assert source["Pulmonary embolism"] == "vocabulary:other" and len(vocab) == len(ct_rate()) + 1
    texts = ["Pulmonary nodules in the right lung. Filling defect in the left lower lobe artery.",
             "A lung nodule is seen. No pulmonary embolism.", "Pulmonary emboli on both sides."]
    derived = derive_labels(["a", "b", "c"], texts, min_count=2, vocabulary_sets=["ct-rate", str(other)])
    assert {c.name: c.positive for c in derived.kept} == {"Lung nodule": 2, "Pulmonary embolism": 2}
