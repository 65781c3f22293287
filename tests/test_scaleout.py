"""`rad3d embed` and `rad3d evaluate` under `accelerate launch` with two CPU processes (gloo): each
process takes a disjoint shard of the cases, and the cache and the predictions come out as one
process makes them; a failed evaluation resumes where it stopped.

accelerate 1.15's `launch --cpu --num_processes 2` starts ONE process (its multi-process CPU path
is mpirun with a hostfile), so the processes are started as on GPUs (`--multi_gpu`, i.e. torchrun);
they meet over gloo either way (engine.shards) and `--device cpu` keeps the work on the CPU."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import cli
from engine.cache import EmbeddingCache
from engine.errors import ConfigError
from engine.shards import Shard
from training.prediction_shards import PredictionShards

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def launch_two(args: list[str]) -> subprocess.CompletedProcess:
    """`accelerate launch ... -m cli ARGS` (as the README shows) in two CPU processes, on a free
    port (other tests may hold accelerate's default one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(port), "-m", "cli", *args, "--device", "cpu"]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_shards_are_disjoint_and_cover_the_cases():
    names = [f"case_{i}" for i in range(7)]
    parts = [Shard(i, 3).take(names) for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(names) and [len(p) for p in parts] == [3, 2, 2]
    alone = Shard()
    assert alone.take(names) == names and alone.gather("x") == ["x"] and alone.is_main
    # Without a launcher: one shard, on the device asked for, and accelerate's process group untouched.
    launched = Shard.launched("cpu")
    assert (launched.index, launched.count, launched.device, launched.state) == (0, 1, torch.device("cpu"), None)


def test_partial_predictions_of_another_job_are_refused(tmp_path):
    job = {"run": "r", "split": "test", "generation": {"max_new_tokens": 6}}
    parts = PredictionShards(tmp_path, job)
    assert parts.done() == set()
    parts.start()
    rows = pd.DataFrame({"VolumeName": ["b", "a"], "reference": ["x", ""], "generated": ["", "NA"], "run": "r",
                         "variant": "v3", "seconds": [0.1, 1 / 3], "new_tokens": [0, 2], "finished": [True, False]},
                        index=[4, 5])
    parts.write(rows)
    assert parts.done() == {"a", "b"}
    # Read back exactly as written: empty and "NA" texts stay text, the numbers keep their types.
    pd.testing.assert_frame_equal(parts.merge(["a", "b"]), rows.iloc[[1, 0]].reset_index(drop=True))
    with pytest.raises(ConfigError, match="have no predictions"):
        parts.merge(["a", "b", "c"])
    with pytest.raises(ConfigError, match=r"made otherwise \(generation: \{'max_new_tokens': 6\} there"):
        PredictionShards(tmp_path, {**job, "generation": {"max_new_tokens": 8}}).done()


@pytest.mark.slow
def test_two_processes_fill_the_same_cache_as_one(tmp_path):
    from engine.synth.config import SynthConfig
    from engine.synth.writer import write_dataset
    from training_fixtures import write_image_model

    data = write_dataset(SynthConfig(n=5, seed=3, scale=8.0), tmp_path / "data", progress=False)
    write_image_model(tmp_path / "image")
    args = ["embed", "--data", str(data), "--image-model", str(tmp_path / "image"), "--workers", "0"]
    assert cli.main([*args, "--out", str(tmp_path / "one"), "--device", "cpu"]) == 0
    done = launch_two([*args, "--out", str(tmp_path / "two")])
    # Printed once, by the main process, for both shards: each volume embedded once.
    assert done.stdout.count("embedded") == 1 and "5 embedded, 0 already cached, 0 failed" in done.stdout

    one, two = EmbeddingCache.open(tmp_path / "one"), EmbeddingCache.open(tmp_path / "two")
    assert two.names() == one.names() and len(one) == 5
    assert two.identity == one.identity and two.provenance == one.provenance
    for name in one.names():
        a, b = one.get(name), two.get(name)
        np.testing.assert_array_equal(a.latent, b.latent)
        np.testing.assert_array_equal(a.logits, b.logits)
    assert not list((tmp_path / "two" / "entries").glob("*.tmp"))


@pytest.mark.slow
def test_two_processes_resume_an_evaluation_and_write_what_one_writes(training_setup, trained_v3_run, tmp_path):
    from training.evaluate import EvaluateConfig, evaluate_run

    common = ["--run", str(trained_v3_run), "--data", str(training_setup["data"]), "--cache",
              str(training_setup["cache"]), "--split", "test", "--batch-size", "2", "--max-new-tokens", "6",
              "--no-bertscore", "--no-meteor", "--resamples", "50", "--no-progress", "--convention", "raw"]
    assert cli.main(["evaluate", *common, "--out", str(tmp_path / "one"), "--device", "cpu"]) == 0
    one = pd.read_csv(tmp_path / "one" / "predictions.csv", keep_default_na=False)
    assert not (tmp_path / "one" / "shards").exists()  # removed once the evaluation is whole

    # A run that fails after its first batch (2 of the 4 cases) leaves that batch behind...
    from engine.inference import InferenceSession

    session = InferenceSession.load(trained_v3_run, device="cpu")
    calls, generate = [], session.generate

    def fail_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("node lost")
        return generate(*a, **k)

    session.generate = fail_second
    config = EvaluateConfig(run=str(trained_v3_run), data=str(training_setup["data"]), cache=str(training_setup["cache"]),
                            out=str(tmp_path / "two"), batch_size=2, max_new_tokens=6, bertscore=False, meteor=False,
                            resamples=50, convention="raw")
    with pytest.raises(RuntimeError, match="node lost"):
        evaluate_run(config, progress=False, session=session)
    first = pd.read_csv(tmp_path / "two" / "shards" / "rows-0000000.csv", keep_default_na=False)
    assert first["VolumeName"].tolist() == one["VolumeName"].tolist()[:2]

    # ... and two processes generate the other two cases, one each, and merge all four.
    done = launch_two(["evaluate", *common, "--out", str(tmp_path / "two")])
    assert done.stdout.count("| metric | value | 95% CI |") == 1  # merged and scored once, by the main process
    two = pd.read_csv(tmp_path / "two" / "predictions.csv", keep_default_na=False)
    assert list(two.columns) == list(one.columns) and len(two) == 4
    timing = ["seconds"]  # measured, so it differs between runs
    pd.testing.assert_frame_equal(two.drop(columns=timing), one.drop(columns=timing))
    assert two["seconds"].tolist()[:2] == first["seconds"].tolist()  # kept from the failed run, not regenerated
    assert not (tmp_path / "two" / "shards").exists()

    metrics_one, metrics_two = (json.loads((tmp_path / d / "metrics.json").read_text())["metrics"] for d in ("one", "two"))
    assert metrics_two == metrics_one and any(m["key"] == "auroc_macro" for m in metrics_one)
    assert (tmp_path / "two" / "per_case.csv").read_text() == (tmp_path / "one" / "per_case.csv").read_text()
