"""Training connectors on the embedding cache: the loss falls, a killed run resumes to the same
steps and weights, the frozen decoder stays bit-identical, the written run loads and generates,
and bad input is refused by name."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from engine.cache import EmbeddingCache
from engine.decoders import load_causal_lm
from engine.errors import ConfigError, DatasetError
from training.checkpointing import find_checkpoint, read_state, read_trainable
from training.connector_recipe import train_connector
from training_fixtures import assert_same_training, train_config  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def test_v3_training_lowers_the_loss(training_setup, tiny_gpt2_dir, tmp_path):
    result = train_connector(train_config(training_setup, tiny_gpt2_dir, tmp_path / "run", epochs=4), progress=False)
    assert result.finished and result.step == result.total_steps == 16  # 16 cases, batch 4, 4 epochs
    log = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert log["step"].tolist() == list(range(1, 17))
    assert list(log.columns) == ["step", "epoch", "loss", "lr", "val_loss", "samples_per_s"]
    by_epoch = log.groupby("epoch")["loss"].mean()
    assert by_epoch[4] < by_epoch[1] - 0.5, by_epoch.tolist()
    val = log["val_loss"].dropna()
    assert len(val) == 4 and val.iloc[-1] < val.iloc[0] - 0.3, val.tolist()
    assert result.best_val_loss == pytest.approx(val.min(), rel=1e-5)
    # The linear schedule decays to zero: each step's LR is below the one before after warmup.
    assert (np.diff(log["lr"].to_numpy()[1:]) < 0).all()
    # The run carries its domain guard: fitted on the train split's latents, threshold from valid.
    from engine.rundir import load_domain_guard, open_run

    run = open_run(tmp_path / "run")
    guard = load_domain_guard(run)
    assert run.config.domain_guard.calibration["split"] == "valid" and guard.calibration["cases"] > 0
    assert np.isfinite(guard.threshold) and guard.threshold > 0


def test_killed_run_resumes_to_the_same_steps_and_weights(training_setup, tiny_gpt2_dir, tmp_path):
    # 16 cases, batch 4: 4 steps per epoch, 8 in all; checkpoints at 3, 4, 6, 8 (epochs + every 3).
    config = dict(epochs=2, save_every_steps=3)
    whole = train_connector(train_config(training_setup, tiny_gpt2_dir, tmp_path / "whole", **config), progress=False)

    class Killed(Exception):
        pass

    def kill_at_7(step, loss):
        if step == 7:  # mid-epoch 2, one step after the last checkpoint (step 6)
            raise Killed

    killed_cfg = train_config(training_setup, tiny_gpt2_dir, tmp_path / "killed", **config)
    with pytest.raises(Killed):
        train_connector(killed_cfg, progress=False, on_step=kill_at_7)
    state = read_state(find_checkpoint(tmp_path / "killed"))
    assert (state.step, state.epoch, state.batches_done, state.finished) == (6, 1, 2, False)
    assert pd.read_csv(tmp_path / "killed" / "metrics.csv")["step"].tolist() == list(range(1, 8))
    with pytest.raises(ConfigError, match="pass --resume"):
        train_connector(killed_cfg, progress=False)

    resumed = train_connector(killed_cfg, resume=True, progress=False)
    assert resumed.finished and resumed.step == whole.step == 8
    assert pd.read_csv(tmp_path / "killed" / "metrics.csv")["step"].tolist() == list(range(1, 9))  # every step once
    assert_same_training(tmp_path / "killed", tmp_path / "whole")
    # Resuming a finished run trains nothing more and rewrites the same run.
    again = train_connector(killed_cfg, resume=True, progress=False)
    assert again.step == 8 and len(pd.read_csv(tmp_path / "killed" / "metrics.csv")) == 8


@pytest.mark.parametrize("variant", ["v2", "v3"])
def test_frozen_decoder_is_untouched_and_the_run_loads(variant, training_setup, tiny_gpt2_dir, tmp_path):
    import cli
    from engine.inference import InferenceSession

    out = tmp_path / "run"
    args = ["train", "--variant", variant, "--data", str(training_setup["data"]), "--cache",
            str(training_setup["cache"]), "--decoder", str(tiny_gpt2_dir), "--image-model", str(training_setup["image"]),
            "--out", str(out), "--epochs", "1", "--batch-size", "4", "--prefix-len", "3", "--clip-len", "3",
            "--layers", "1", "--heads", "4", "--lr", "1e-3", "--no-progress"]
    assert cli.main(args) == 0
    fresh, _ = load_causal_lm(tiny_gpt2_dir)
    result = train_connector(train_config(training_setup, tiny_gpt2_dir, out, variant=variant, epochs=1,
                                          prefix_len=3, clip_len=3, layers=1, max_report_tokens=None),
                             resume=True, progress=False)
    trained = result.model.decoder.state_dict()
    for k, v in fresh.state_dict().items():
        assert torch.equal(trained[k], v), k
    assert all(k.startswith("connector.") for k in read_trainable(find_checkpoint(out)))

    config = json.loads((out / "config.json").read_text())
    assert config["variant"] == variant and config["decoder"]["weights"] is None
    # The image model's per-finding valid AUROC travels into the run, for the app to show.
    image = json.loads((training_setup["image"] / "image_model.json").read_text())
    assert config["classifier"]["valid_auroc"] == image["classifier"]["valid_auroc"]
    assert config["notes"]["parameters"]["trainable"] == result.trainable_params
    assert not (out / "decoder.safetensors").exists()
    session = InferenceSession.load(out, device="cpu")
    assert list(session.valid_auroc.values()) == image["classifier"]["valid_auroc"]
    best = read_trainable(find_checkpoint(out, "best"))
    for k, v in session.generator.connector.state_dict().items():
        assert torch.equal(v, best[f"connector.{k}"]), k
    cache = EmbeddingCache.open(training_setup["cache"])
    latents, logits = cache.stack(cache.names()[:3], with_logits=True)
    texts = session.generate(torch.from_numpy(latents), torch.from_numpy(logits)).texts
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)


def _broken_copy(setup, tmp_path, what):
    """A copy of the setup with one thing wrong; returns (paths, expected error, message pattern)."""
    paths = {k: tmp_path / k for k in setup}
    for k, src in setup.items():
        shutil.copytree(src, paths[k])
    cache = EmbeddingCache.open(paths["cache"])
    if what == "missing case":
        (paths["cache"] / "entries" / "train_3_a_1.nii.gz.safetensors").unlink()
        return paths, ConfigError, r"lacks 1 requested case\(s\): train_3_a_1.nii.gz"
    if what == "no logits":
        for name in cache.names():
            cache.put(name, cache.get(name).latent)
        return paths, ConfigError, "rad3d train-classifier"
    if what == "stale logits":
        entry = cache.get("train_2_a_1.nii.gz")
        cache.put("train_2_a_1.nii.gz", entry.latent, entry.logits + 1.0)
        return paths, ConfigError, r"train_2_a_1.nii.gz\) are not the output of the classifier"
    if what == "empty split":
        splits = pd.read_csv(paths["data"] / "splits.csv")
        splits["split"] = splits["split"].replace("train", "valid")
        splits.to_csv(paths["data"] / "splits.csv", index=False)
        return paths, DatasetError, "split 'train' has no cases"
    if what == "label set":
        # A consistent 17-finding image model against a dataset labelled with CT-RATE's 18.
        from safetensors.torch import load_file, save_file

        image = json.loads((paths["image"] / "image_model.json").read_text())
        image["label_set"] = {"name": "ct-rate-17", "findings": image["label_set"]["findings"][:17]}
        image["classifier"]["config"]["n_labels"] = 17
        image["classifier"]["thresholds"] = image["classifier"]["thresholds"][:17]
        (paths["image"] / "image_model.json").write_text(json.dumps(image))
        head = load_file(paths["image"] / "classifier.safetensors")
        save_file({"out.weight": head["out.weight"][:17].contiguous(), "out.bias": head["out.bias"][:17].contiguous()},
                  str(paths["image"] / "classifier.safetensors"))
        return paths, DatasetError, "has columns not in label set"
    if what == "other encoder":
        from safetensors.torch import load_file, save_file

        weights = load_file(paths["image"] / "encoder.safetensors")
        first = sorted(k for k, v in weights.items() if v.is_floating_point())[0]
        weights[first] = weights[first] + 1
        save_file(weights, str(paths["image"] / "encoder.safetensors"))
        return paths, ConfigError, "embedding cache does not match image model.*encoder"
    raise AssertionError(what)


@pytest.mark.parametrize("what", ["missing case", "no logits", "stale logits", "empty split", "label set",
                                  "other encoder"])
def test_bad_input_is_refused_by_name(what, training_setup, tiny_gpt2_dir, tmp_path):
    paths, error, pattern = _broken_copy(training_setup, tmp_path, what)
    with pytest.raises(error, match=pattern):
        train_connector(train_config(paths, tiny_gpt2_dir, tmp_path / "run", max_steps=1), progress=False)
    assert find_checkpoint(tmp_path / "run") is None


def test_stop_at_step_leaves_a_resumable_run_without_writing_it(training_setup, tiny_gpt2_dir, tmp_path):
    config = train_config(training_setup, tiny_gpt2_dir, tmp_path / "run", epochs=2)
    stopped = train_connector(config, stop_at_step=3, progress=False)
    assert (stopped.step, stopped.total_steps, stopped.finished) == (3, 8, False)
    assert not (tmp_path / "run" / "config.json").exists()  # no inference run from a half-trained connector
    assert read_state(find_checkpoint(tmp_path / "run")).step == 3
    done = train_connector(config, resume=True, progress=False)
    assert done.finished and done.step == 8 and (tmp_path / "run" / "config.json").is_file()


def test_report_section_is_chosen_checked_and_recorded(training_setup, tiny_gpt2_dir, tmp_path):
    from engine.errors import DatasetError
    from engine.rundir import open_run

    # the fixture's impressions are all "Not given.": nothing to learn, said by name
    with pytest.raises(DatasetError, match="has no cases with impression text"):
        train_connector(train_config(training_setup, tiny_gpt2_dir, tmp_path / "imp", section="impression"),
                        progress=False)
    train_connector(train_config(training_setup, tiny_gpt2_dir, tmp_path / "run", epochs=1), progress=False)
    assert open_run(tmp_path / "run").config.report_section == "findings"
