"""What the app can show: the configured dataset's cases and runs, shared by every browser session,
and each session's own uploaded volumes (`owner`: Gradio's session hash), seen by no other session.
Cases and runs are looked up by name in what was configured; no name from a client ever becomes a
path except through the upload area's checks."""

from __future__ import annotations

import threading
from pathlib import Path

from engine.errors import ConfigError
from engine.volume import Volume
from ui.uploads import UPLOAD_PREFIX, UploadArea, display_name
from ui.volumes import VolumeStore

# The case list opens on cases no run learned from: held-out test first, then validation, then training.
SPLIT_ORDER = ("test", "valid", "train")
SPLIT_WORDS = {"test": "held-out test", "valid": "validation", "train": "training"}


class CaseBrowser:
    def __init__(self, config):
        from engine.data import resolve

        self.config = config
        # A viewer: a blank report section is shown as such, not refused (section=None).
        self.dataset = resolve(config.data_source or config.data_dir, section=None)
        self.label_names = list(self.dataset.label_set.names)
        self.uploads = UploadArea(config.upload_dir, int(config.max_upload_mb * 2**20),
                                  config.upload_retention_hours * 3600)
        self.uploads.purge_expired()
        self.volumes = VolumeStore(self._load)
        self._sessions: dict[str, object] = {}
        self._session_lock = threading.Lock()

    # -- cases ---------------------------------------------------------------------------------
    def _load(self, key: str) -> Volume:
        if key.startswith(UPLOAD_PREFIX):
            return self.uploads.load_cached(key)  # a cache key made by volume(): ownership checked
        return self.dataset.load_volume(key)  # unknown names: DatasetError, no path is built

    def volume(self, key: str, owner: str = "") -> Volume:
        """A dataset case, or one of `owner`'s uploads (VolumeError for anyone else's)."""
        if key.startswith(UPLOAD_PREFIX):
            return self.volumes.get(self.uploads.cache_key(key, owner))
        return self.volumes.get(key)

    def case_names(self, query: str = "", finding: str | None = None, owner: str = "") -> list[str]:
        """`owner`'s uploaded volumes first (when no finding filter is set), then the dataset's cases,
        held-out test cases first (SPLIT_ORDER)."""
        names = [k for k in self.uploads.keys(owner) if not finding or finding == "(any)"]
        names = [k for k in names if not query or query.lower() in k.lower()]
        rank = {s: i for i, s in enumerate(SPLIT_ORDER)}
        for case in sorted(self.dataset.cases, key=lambda c: rank.get(c.split, len(rank))):  # stable within a split
            if query and query.lower() not in case.volume_name.lower():
                continue
            if finding and finding != "(any)" and case.labels is not None:
                if not case.labels[self.dataset.label_set.index(finding)]:
                    continue
            names.append(case.volume_name)
        return names

    def case_label(self, key: str) -> str:
        """How the case list shows a case: its name and its split (an upload: its file name)."""
        if key.startswith(UPLOAD_PREFIX):
            return display_name(key)
        split = self.dataset.case(key).split
        return f"{key} · {SPLIT_WORDS.get(split, split)}"

    def case_choices(self, query: str = "", finding: str | None = None, owner: str = "") -> list[tuple[str, str]]:
        """case_names as the list's (label, name) choices."""
        return [(self.case_label(k), k) for k in self.case_names(query, finding, owner)]

    def add_upload(self, temp_path: str | Path, client_name: str, owner: str) -> str:
        """Store and read an uploaded file as `owner`'s; returns its case key (VolumeError if
        refused or unreadable, and then nothing is kept)."""
        self.uploads.purge_expired()
        key = self.uploads.store(temp_path, client_name, owner)
        try:
            self.volume(key, owner)
        except Exception:
            self.uploads.discard(key, owner)
            raise
        return key

    def end_session(self, owner: str) -> int:
        """Delete `owner`'s uploads (the browser session ended); returns how many."""
        return self.uploads.forget(owner)

    def reference(self, key: str, section: str = "findings") -> tuple[str, dict[str, int] | None]:
        """(reference text of `section`, {finding: 0/1} or None) of a dataset case; ("", None) for
        uploads. `section` is what the run writes (run.config.report_section): findings, impression
        or anything else for both."""
        if key.startswith(UPLOAD_PREFIX):
            return "", None
        case = self.dataset.case(key)
        labels = None if case.labels is None else dict(zip(self.label_names, (int(v) for v in case.labels)))
        text = {"findings": case.findings, "impression": case.impression}.get(section, case.report)
        return text, labels

    # -- runs ----------------------------------------------------------------------------------
    def session(self, run_name: str):
        """The loaded InferenceSession (MultimodalSession for a multimodal run) of a configured run
        (loaded once, on first use)."""
        from engine.inference import InferenceSession

        if run_name not in self.config.runs:
            raise ConfigError(f"no run named {run_name!r} is configured (start the app with --run NAME=RUN_DIR)")
        with self._session_lock:
            if run_name not in self._sessions:
                from engine.multimodal_run import is_multimodal_run
                from engine.multimodal_session import MultimodalSession

                path = self.config.runs[run_name]  # a multimodal run answers questions (the Ask box)
                load = MultimodalSession.load if is_multimodal_run(path) else InferenceSession.load
                self._sessions[run_name] = load(path)
            return self._sessions[run_name]
