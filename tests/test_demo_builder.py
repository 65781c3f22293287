"""The demo model built in the background on the app's first start: the builder's states with
fake build functions (real threads, real tqdm bar), the page's banner and run lists as the timer
callback computes them, and the command's choice of when to build."""

from __future__ import annotations

import io
import threading
import time

import pytest

from engine.errors import ConfigError
from ui.demo import Demo
from ui.demo_builder import BUILDING, FAILED, IDLE, READY, DemoBuilder
from ui.screens.common import NO_RUN, NO_RUN_HINT
from ui.screens.demo_status import banner_markdown, no_run_hint, tick_update

WAIT_S = 60  # a guard only: every test releases its build explicitly (build_app alone takes ~10 s on a busy machine)


class FakeBuild:
    """Says two step lines, then waits for `release` (so a test sees the build running) and returns
    the runs, or raises `error`."""

    def __init__(self, tmp_path, names=("v3", "v2"), error: BaseException | None = None, bar=False):
        self.runs = {n: tmp_path / "runs" / n for n in names}
        self.error, self.bar = error, bar
        self.running, self.release = threading.Event(), threading.Event()
        self.calls = 0

    def __call__(self, say):
        from tqdm import tqdm

        self.calls += 1
        say("[1/2] decoder: converting")
        time.sleep(0.02)
        say("[2/2] connectors: training")
        progress = tqdm(total=10, desc="train v3", file=io.StringIO(), disable=not self.bar)
        progress.update(4)
        self.running.set()
        try:
            assert self.release.wait(WAIT_S), "the test never released the fake build"
        finally:
            progress.close()
        if self.error is not None:
            raise self.error
        return self.runs


def started(fake, **kwargs) -> tuple[DemoBuilder, list[str]]:
    echoed: list[str] = []
    builder = DemoBuilder(fake, expected=("v3", "v2"), echo=echoed.append, **kwargs)
    assert builder.status().phase == IDLE and builder.start()
    assert fake.running.wait(WAIT_S)
    return builder, echoed


def test_a_build_reaches_ready_with_its_lines_and_runs(tmp_path):
    fake = FakeBuild(tmp_path, bar=True)
    builder, echoed = started(fake)
    running = builder.status()
    assert running.phase == BUILDING and not running.done
    assert running.step == "[2/2] connectors: training"
    assert "train v3" in running.bar and "4/10" in running.bar  # the running step's tqdm bar
    assert not builder.start()  # one build at a time
    fake.release.set()
    done = builder.wait(WAIT_S)
    assert done.phase == READY and done.done and done.error == ""
    assert done.runs == fake.runs and done.bar == ""
    assert [line.text for line in done.lines] == ["[1/2] decoder: converting", "[2/2] connectors: training"]
    assert 0 <= done.lines[0].at_s <= done.lines[1].at_s <= done.elapsed_s
    assert str(done.lines[0]).startswith("[0:00] [1/2]")
    assert echoed[:2] == ["[1/2] decoder: converting", "[2/2] connectors: training"]  # the terminal's lines
    assert "ready" in echoed[-1]
    assert builder.status().elapsed_s == done.elapsed_s  # the clock stops with the build
    assert not builder.start() and fake.calls == 1


@pytest.mark.parametrize("error, shown", [
    (ConfigError("demo/image/image_model.json: missing 'encoder'"), "demo/image/image_model.json: missing 'encoder'"),
    (RuntimeError("out of memory"), "RuntimeError: out of memory"),
])
def test_a_failing_build_keeps_its_reason_and_can_be_retried(tmp_path, error, shown):
    fake = FakeBuild(tmp_path, error=error)
    builder, echoed = started(fake)
    fake.release.set()
    failed = builder.wait(WAIT_S)
    assert failed.phase == FAILED and failed.error == shown and failed.runs == {}
    assert shown in echoed[-1] and "rad3d demo build" in echoed[-1]
    banner = banner_markdown(failed)
    assert shown in banner and "rad3d demo build" in banner and "[2/2] connectors: training" in banner
    assert "could not be built" in no_run_hint(failed, have_runs=False)

    fake.error, fake.running, fake.release = None, threading.Event(), threading.Event()
    assert builder.start()  # a retry after a failure
    assert fake.running.wait(WAIT_S)
    fake.release.set()
    assert builder.wait(WAIT_S).phase == READY and fake.calls == 2


def test_a_build_that_ends_without_every_run_is_a_failure_with_its_runs(tmp_path):
    fake = FakeBuild(tmp_path, names=("v3",))
    builder, _ = started(fake)
    fake.release.set()
    status = builder.wait(WAIT_S)
    assert status.phase == FAILED and "v2" in status.error and status.runs == fake.runs
    assert no_run_hint(status, have_runs=True) == "Choose a run in the Run list."


def test_tick_update_offers_the_runs_only_when_the_build_ends(tmp_path):
    fake = FakeBuild(tmp_path)
    builder, _ = started(fake)
    running = tick_update(builder.status(), [], NO_RUN, [], 3)
    assert not running.stop and running.banner_visible and running.run_choices is None
    assert "[2/2] connectors: training" in running.banner and "so far" in running.banner
    fake.release.set()
    ready = tick_update(builder.wait(WAIT_S), ["v3", "v2"], NO_RUN, [], 3)
    assert ready.stop and ready.run_choices == ["v3", "v2"] and ready.review_run == "v3"
    assert ready.compare_runs == ["v3", "v2"] and "ready" in ready.banner.lower()
    kept = tick_update(builder.status(), ["v3", "v2"], "v2", ["v2"], 3)  # the user's choice stays
    assert kept.review_run == "v2" and kept.compare_runs == ["v2"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from engine.synth.config import SynthConfig
    from engine.synth.writer import write_dataset

    return write_dataset(SynthConfig(n=2, seed=0, scale=8.0), tmp_path_factory.mktemp("app") / "data",
                         progress=False)


def test_the_app_shows_the_build_and_gets_its_runs(data_dir, tmp_path):
    from ui.app import AppConfig, build_app

    fake = FakeBuild(tmp_path)
    builder, _ = started(fake)
    config = AppConfig(data_dir=data_dir, upload_dir=tmp_path / "uploads")
    app = build_app(config, demo_builder=builder)
    tick = app.rad3d_demo_tick
    initial = next(b for b in app.blocks.values() if getattr(b, "elem_id", None) == "report-status").value
    assert "being built" in initial and "so far" not in initial  # fixed text: no clock that stops

    banner, run, status, compare, compare_status, timer = tick(NO_RUN, [])
    assert banner.visible and "[2/2] connectors: training" in banner.value
    assert run == status == compare == compare_status == {"__type__": "update"}  # unchanged while building
    assert timer.active
    generate = next(f.fn for f in app.fns.values() if getattr(f.fn, "__name__", "") == "on_generate")
    hint = next(generate("case", NO_RUN, "greedy", 8, False))[4]
    assert "being built" in hint and "[2/2]" in hint  # Generate with no run yet: a readable reason

    fake.release.set()
    builder.wait(WAIT_S)
    banner, run, status, compare, compare_status, timer = tick(NO_RUN, [])
    assert run.choices == [("v3", "v3"), ("v2", "v2")] and run.value == "v3"
    assert compare.value == ["v3", "v2"] and "ready" in banner.value.lower() and "ready" in status.lower()
    assert not timer.active
    assert config.runs == fake.runs  # the new runs generate (CaseBrowser looks them up here)


def test_without_a_builder_the_app_is_unchanged(data_dir, tmp_path):
    from ui.app import AppConfig, build_app

    app = build_app(AppConfig(data_dir=data_dir, upload_dir=tmp_path / "uploads"))
    assert app.rad3d_demo_tick is None
    generate = next(f.fn for f in app.fns.values() if getattr(f.fn, "__name__", "") == "on_generate")
    assert next(generate("case", NO_RUN, "greedy", 8, False))[4] == NO_RUN_HINT


class RecordingBuilder:
    made: list[RecordingBuilder] = []

    def __init__(self, build, *, expected, prepare):
        self.build, self.expected, self.started = build, expected, False
        RecordingBuilder.made.append(self)

    def start(self):
        self.started = True
        return True


@pytest.mark.parametrize("argv, runs, builds", [
    (["app"], {}, True),
    (["app"], {"v3": "R"}, True),  # half a demo: the build continues it
    (["app"], {"v3": "R", "v2": "R"}, False),
    (["app", "--no-demo-build"], {}, False),
    (["app", "--run", "mine=/some/run"], {}, False),  # the user's runs: never build
])
def test_the_command_builds_only_a_missing_demo(argv, runs, builds, capsys):
    import cli
    from ui.commands.app import start_demo_build

    RecordingBuilder.made.clear()
    args = cli.build_parser().parse_args(argv)
    demo = cli.wiring()["ui.commands.app"]["demo"]  # training's demo, as the command receives it
    builder = start_demo_build(args, runs, demo, make_builder=RecordingBuilder)
    assert (builder is not None) == builds == bool(RecordingBuilder.made)
    assert builder is None or (builder.started and builder.build is demo.build and builder.expected == ("v3", "v2"))
    if "--no-demo-build" in argv:
        assert "rad3d demo build" in capsys.readouterr().out
    from training.demo.build import DemoRecipe

    assert demo.missing_runs(runs) == [v for v in DemoRecipe().variants if v not in runs]
    assert start_demo_build(cli.build_parser().parse_args(["app"]), runs, None, RecordingBuilder) is None  # no demo


def test_the_app_command_receives_the_demo_from_the_cli(monkeypatch, tmp_path):
    """ui never imports training: `rad3d app` opens the demo that cli.py hands it, and without one
    asks for --data and --run in one line."""
    import cli
    from engine.errors import ConfigError
    from ui.commands.app import app_config

    calls = []
    fake = Demo(data=lambda: calls.append("data") or tmp_path, runs=lambda: {"v3": tmp_path / "v3"},
                variants=("v3",), build=lambda say: {})
    monkeypatch.setattr(cli, "wiring", lambda: {"ui.commands.app": {"demo": fake}})
    args = cli.build_parser().parse_args(["app"])
    assert args.handler.keywords["demo"] is fake
    config = app_config(args, fake)
    assert config.data_dir == tmp_path and config.runs == {"v3": tmp_path / "v3"} and calls == ["data"]
    with pytest.raises(ConfigError, match="--data and --run"):
        app_config(args, None)


def test_prepare_runs_in_the_starting_thread_before_the_build(tmp_path):
    seen = []
    fake = FakeBuild(tmp_path)
    builder = DemoBuilder(fake, expected=("v3", "v2"), echo=lambda line: None,
                          prepare=lambda: seen.append((threading.current_thread(), fake.calls)))
    assert builder.start() and fake.running.wait(WAIT_S)
    assert seen == [(threading.current_thread(), 0)]
    fake.release.set()
    assert builder.wait(WAIT_S).phase == READY
