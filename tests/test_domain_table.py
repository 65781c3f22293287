"""Issue #19's out-of-domain path end to end on tiny phantoms: synth --domain inspect-like, embed with
a CT-RATE-headed image model, train-classifier --tune-last-layer on the inspect-like labels, and the
classifier's in/out-of-domain table (macro AUROC with intervals, checked against sklearn)."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cli import main
from engine.cache import EmbeddingCache
from engine.data import DataSource, resolve
from engine.errors import ConfigError
from engine.labels import load_label_set
from study.domain_table import shared_findings
from training_fixtures import write_image_model


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    root = tmp_path_factory.mktemp("domains")
    write_image_model(root / "image")
    for name, extra in (("ct", []), ("insp", ["--domain", "inspect-like"])):
        assert main(["synth", "--out", str(root / name), "--n", "10", "--seed", "3", "--scale", "8", *extra]) == 0
    return root


def test_phantom_truth_names_the_label_set_and_a_wrong_one_is_one_line(domains, capsys):
    insp = resolve(domains / "insp", section=None)
    assert insp.label_set.name == "inspect-like" and len(insp.cases[0].labels) == 21
    assert resolve(domains / "ct", section=None).label_set.name == "ct-rate"
    src = DataSource(root=str(domains / "insp"), label_set="inspect-like")
    assert DataSource.coerce(src.dumps()) == src
    assert DataSource.from_dict({"root": "x"}).label_set is None  # older records read as before
    assert main(["scan", "--data", str(domains / "insp"), "--label-set", "ct-rate"]) == 1
    err = capsys.readouterr().err.strip()
    assert "labels.csv" in err and "lacks label columns" in err and "Embolism" in err and "\n" not in err


def test_embed_then_tune_then_table(domains, capsys):
    root, insp = domains, str(domains / "insp")
    # embed: the cache stores the image model's own (ct-rate) logits; the dataset keeps its 21 labels
    assert main(["embed", "--data", insp, "--image-model", str(root / "image"), "--out", str(root / "c"),
                 "--workers", "0", "--device", "cpu"]) == 0
    cache = EmbeddingCache.open(root / "c")
    names = [c.volume_name for c in resolve(insp, section=None).cases]
    assert cache.stack(names, with_logits=True)[1].shape == (10, 18)
    assert main(["train-classifier", "--tune-last-layer", "--data", insp, "--label-set", "inspect-like",
                 "--image-model", str(root / "image"), "--out", str(root / "tuned"), "--epochs", "1",
                 "--batch-size", "4"]) == 0
    capsys.readouterr()
    out = root / "table.md"
    assert main(["domain-table", "--image-models", f"base={root / 'image'}", f"adapted={root / 'tuned'}",
                 "--datasets", f"ct-rate-like={root / 'ct'}", f"inspect-like={insp}", "--work", str(root / "w"),
                 "--resamples", "50", "--workers", "0", "--split", "train", "--out", str(out)]) == 0
    table = out.read_text()
    assert "| base |" in table and "| adapted |" in table and table.count("findings") >= 4
    # the adapted cell on its own domain equals sklearn's macro AUROC on the cached logits
    ds = resolve(insp, section=None)
    cases = [c for c in ds.cases if c.split == "train"]
    _, logits = EmbeddingCache.open(root / "w" / "adapted--inspect-like").stack(
        [c.volume_name for c in cases], with_logits=True)
    labels = np.stack([c.labels for c in cases])
    usable = [j for j in range(21) if 0 < labels[:, j].sum() < len(cases)]
    expected = np.mean([roc_auc_score(labels[:, j], logits[:, j]) for j in usable])
    row = next(line for line in table.splitlines() if line.startswith("| adapted |"))
    assert f"{expected:.3f}" in row.split("|")[3] and f"({len(usable)} findings" in row.split("|")[3]
    # the CT-RATE head on inspect-like data scores only the findings both sets hold (Atelectasis, Consolidation)
    base = next(line for line in table.splitlines() if line.startswith("| base |")).split("|")[3]
    assert int(base.split("(")[1].split()[0]) in (1, 2)


def test_no_shared_finding_is_one_line():
    ct, insp = load_label_set("ct-rate"), load_label_set("inspect-like")
    assert shared_findings(ct.names, insp.names, model="m", data="d") == ["Atelectasis", "Consolidation"]
    with pytest.raises(ConfigError, match="share no finding"):
        shared_findings(["Embolism"], ct.names, model="m", data="d")
