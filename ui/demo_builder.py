"""The embedded demo model, built in the background on the app's first start: one daemon thread
runs the build while the server already serves; every step line goes to the terminal and into a
thread-safe status that the page polls. A failed build never stops the server: its reason is kept
for the page."""

from __future__ import annotations

import re
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

Say = Callable[[str], None]
# A build: called with `say` (one progress line at a time); returns the finished runs by name.
BuildFn = Callable[[Say], dict[str, Path]]

IDLE, BUILDING, READY, FAILED = "idle", "building", "ready", "failed"
STEP = re.compile(r"^\[\d+/\d+\]")  # build_demo's step lines: "[3/5] image model …"
RETRY = "`rad3d demo build`"


@dataclass(frozen=True)
class LogLine:
    at_s: float  # seconds since the build started
    text: str

    def __str__(self) -> str:
        return f"[{clock(self.at_s)}] {self.text}"


@dataclass(frozen=True)
class BuildStatus:
    """One consistent snapshot of the build, for the page."""
    phase: str = IDLE
    elapsed_s: float = 0.0
    step: str = ""  # the last step line ("[3/5] image model …")
    bar: str = ""  # the progress bar of the running step, as the terminal shows it
    lines: tuple[LogLine, ...] = ()
    runs: dict[str, Path] = field(default_factory=dict)
    expected: tuple[str, ...] = ()  # the run names a complete build gives
    error: str = ""

    @property
    def done(self) -> bool:
        return self.phase in (READY, FAILED)


def clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def warm_imports() -> None:
    """transformers 5 resolves its top-level names lazily and not thread-safely: a name resolved
    by the build thread while the server thread imports can fail with ImportError. Resolving the
    names the build and the app use once, in the starting thread, avoids that race."""
    try:
        import transformers

        for name in ("AutoConfig", "AutoModelForCausalLM", "AutoTokenizer", "PreTrainedModel",
                     "DynamicCache", "StaticCache", "TextIteratorStreamer"):
            getattr(transformers, name, None)
    except Exception:  # the build itself then reports what is missing
        pass


def readable_error(err: BaseException) -> str:
    from engine.errors import Rad3dError

    if isinstance(err, Rad3dError):
        return str(err)
    return f"{type(err).__name__}: {err}"


def live_bar() -> str:
    """The newest visible tqdm bar of this process (the build's training or writing bar), or ""."""
    try:
        from tqdm.std import tqdm
    except ImportError:
        return ""
    with tqdm.get_lock():
        bars = [b for b in list(tqdm._instances) if not getattr(b, "disable", True)]
    if not bars:
        return ""
    newest = max(bars, key=lambda b: getattr(b, "start_t", 0.0))
    try:
        return str(newest).strip()
    except Exception:  # a bar closing while we format it
        return ""


def _echo(line: str) -> None:
    print(f"rad3d app: demo build: {line}", flush=True)


class DemoBuilder:
    """Runs `build` (the CLI's: training.demo's recipe under $RAD3D_HOME) once in a daemon thread;
    `expected` names the runs a complete build gives.

    status() is safe to call from any thread at any time; start() again after a failure retries
    (every demo step resumes where it stopped)."""

    def __init__(self, build: BuildFn, *, expected: tuple[str, ...], echo: Say = _echo,
                 prepare: Callable[[], None] | None = None, keep_lines: int = 200):
        self._build = build
        self._prepare = prepare  # run in the starting thread before the build thread (e.g. warm_imports)
        self._expected = tuple(expected)
        self._echo = echo
        self._keep = keep_lines
        self._lock = threading.Lock()
        self._phase = IDLE
        self._started = 0.0
        self._ended: float | None = None
        self._step = ""
        self._lines: list[LogLine] = []
        self._runs: dict[str, Path] = {}
        self._error = ""
        self._thread: threading.Thread | None = None

    # -- control -------------------------------------------------------------------------------
    def start(self) -> bool:
        """Start the build in the background; False (and nothing done) when one runs or is done."""
        with self._lock:
            if self._phase in (BUILDING, READY):
                return False
        if self._prepare is not None:
            self._prepare()
        with self._lock:
            if self._phase in (BUILDING, READY):  # another start() won meanwhile
                return False
            self._phase, self._started, self._ended = BUILDING, time.monotonic(), None
            self._step, self._lines, self._error = "", [], ""
            self._thread = threading.Thread(target=self._run, name="rad3d-demo-build", daemon=True)
            self._thread.start()
        return True

    def wait(self, timeout: float | None = None) -> BuildStatus:
        """Block until the build ends (or `timeout` seconds pass); returns the status then."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.status()

    def status(self) -> BuildStatus:
        bar = live_bar()  # outside our lock: tqdm takes its own
        with self._lock:
            end = self._ended if self._ended is not None else time.monotonic()
            return BuildStatus(
                phase=self._phase,
                elapsed_s=end - self._started if self._phase != IDLE else 0.0,
                step=self._step,
                bar=bar if self._phase == BUILDING else "",
                lines=tuple(self._lines),
                runs=dict(self._runs),
                expected=self._expected,
                error=self._error,
            )

    # -- the thread ----------------------------------------------------------------------------
    def _say(self, text: str) -> None:
        text = str(text).rstrip()
        with self._lock:
            line = LogLine(time.monotonic() - self._started, text)
            self._lines = (self._lines + [line])[-self._keep:]
            if STEP.match(text):
                self._step = text
        try:
            self._echo(text)
        except Exception:  # a closed terminal must not stop the build
            pass

    def _run(self) -> None:
        phase, runs, error = FAILED, {}, "the build stopped unexpectedly"
        try:
            runs = {name: Path(p) for name, p in dict(self._build(self._say) or {}).items()}
            missing = [v for v in self._expected if v not in runs]
            if missing:
                error = (f"the build ended without the run(s) {', '.join(missing)}; "
                         f"run {RETRY} to continue it")
            else:
                phase, error = READY, ""
        except Exception as err:  # any failure: keep serving, tell the page why
            error = readable_error(err)
            traceback.print_exc()
        finally:
            with self._lock:
                self._phase, self._runs, self._error = phase, runs, error
                self._ended = time.monotonic()
            try:
                self._echo(f"demo model ready: runs {', '.join(runs)}" if phase == READY
                           else f"failed: {error} (retry with {RETRY})")
            except Exception:
                pass
