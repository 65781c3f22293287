"""The upload area: a NIfTI file or a zipped DICOM series sent from the browser is checked for
size and type, copied under the upload folder with a server-chosen name, and read as a Volume.
Error messages name the client's file, never a server path.

Uploads are private and temporary: each browser session (Gradio's session hash) has its own folder,
and every lookup goes through the asking session's folder, so a second session can neither list nor
open the first one's upload, even knowing its case key. A session's folder is deleted when the
session ends (the page is closed), and any upload older than the retention time is deleted by the
sweeps (on every upload, page load and session end, and by a background timer)."""

from __future__ import annotations

import hashlib
import logging
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from engine.errors import Rad3dError, VolumeError
from engine.io.itk import SINGLE_FILE_ITK_SUFFIXES
from engine.volume import Volume
from ui.paths import child_path, safe_file_name
from ui.upload_limits import DEFAULT_MAX_UPLOAD_MB, DEFAULT_RETENTION_HOURS

log = logging.getLogger("rad3d.app")

# .mhd/.nhdr are left out: a detached header cannot be uploaded without its data file.
ACCEPTED_SUFFIXES = (".nii", ".nii.gz", ".zip") + SINGLE_FILE_ITK_SUFFIXES
UPLOAD_PREFIX = "upload:"  # case keys of uploaded volumes: "upload:<stored file name>"
_TOKEN_HEX = 16  # 64 random bits in every stored name: keys cannot be guessed


def owner_folder_name(owner: str) -> str:
    """The folder of one browser session: a digest, so the session hash itself is never on disk."""
    return hashlib.sha256(owner.encode()).hexdigest()[:32]


@dataclass
class UploadArea:
    root: Path
    max_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 2**20)
    retention_s: float = DEFAULT_RETENTION_HOURS * 3600

    def __post_init__(self):
        self.root = Path(self.root)
        self.root.mkdir(parents=True, exist_ok=True)

    def check(self, client_name: str, size: int) -> str:
        """The stored name for an accepted upload; VolumeError with a readable reason otherwise."""
        shown = safe_file_name(client_name)
        lower = shown.lower()
        if not lower.endswith(ACCEPTED_SUFFIXES):
            raise VolumeError(f"upload refused: {shown} is not a NIfTI file (.nii, .nii.gz), a MetaImage (.mha) or "
                              "NRRD (.nrrd) file, or a zipped DICOM series (.zip)")
        if size > self.max_bytes:
            raise VolumeError(f"upload refused: {shown} is {size / 2**20:.1f} MiB, over the limit of "
                              f"{self.max_bytes / 2**20:.0f} MiB (start the app with a larger --max-upload-mb)")
        if size == 0:
            raise VolumeError(f"upload refused: {shown} is empty")
        return f"{secrets.token_hex(_TOKEN_HEX // 2)}-{shown}"

    def _folder(self, owner: str) -> Path:
        if not owner:
            raise VolumeError("uploads belong to a browser session, and this request has none")
        return child_path(self.root, owner_folder_name(owner))

    def store(self, source: str | Path, client_name: str, owner: str) -> str:
        """Copy an uploaded temporary file into `owner`'s folder; returns its case key."""
        source = Path(source)
        stored = self.check(client_name, source.stat().st_size)
        folder = self._folder(owner)
        folder.mkdir(exist_ok=True)
        shutil.copyfile(source, child_path(folder, stored))
        return UPLOAD_PREFIX + stored

    def path(self, key: str, owner: str) -> Path:
        """The file behind a case key, only ever inside `owner`'s own folder of the upload area."""
        if not key.startswith(UPLOAD_PREFIX):
            raise VolumeError(f"not an uploaded case: {key!r}")
        name = key[len(UPLOAD_PREFIX):]
        if safe_file_name(name) != name:
            raise VolumeError(f"refused: {name!r} is not a name the upload area gave out")
        path = child_path(self._folder(owner), name)
        if not path.is_file():
            hours = self.retention_s / 3600
            raise VolumeError(f"{display_name(key)} is not among this browser session's uploads (uploads are "
                              f"deleted when the page is closed or after {hours:g} h); upload it again")
        return path

    def keys(self, owner: str) -> list[str]:
        """`owner`'s case keys, newest first."""
        folder = self.root / owner_folder_name(owner) if owner else None
        if folder is None or not folder.is_dir():
            return []
        files = sorted((f for f in folder.iterdir() if f.is_file()), key=lambda f: f.stat().st_mtime, reverse=True)
        return [UPLOAD_PREFIX + f.name for f in files]

    def cache_key(self, key: str, owner: str) -> str:
        """The key the app's volume cache keeps this upload under (owner included), after checking
        that the upload is `owner`'s."""
        self.path(key, owner)
        return f"{key}@{owner_folder_name(owner)}"

    def load_cached(self, cache_key: str) -> Volume:
        key, _, folder = cache_key.rpartition("@")
        return self._load(key, child_path(child_path(self.root, folder), key[len(UPLOAD_PREFIX):]))

    def load(self, key: str, owner: str) -> Volume:
        return self._load(key, self.path(key, owner))

    def _load(self, key: str, path: Path) -> Volume:
        from engine.io import load_volume

        try:
            volume = load_volume(path)
        except Rad3dError as err:  # readers quote the file path: show the client's name instead
            problem = err.problem.replace(str(path), _client_name(path.name)).replace(str(self.root), "<uploads>")
            raise type(err)(f"{display_name(key)}: {problem}") from None
        volume.source = display_name(key)  # what the page shows; not the server path
        return volume

    def discard(self, key: str, owner: str) -> None:
        """Delete one upload (refused after storing), and its session folder if that leaves it empty."""
        path = self.path(key, owner)
        path.unlink(missing_ok=True)
        try:
            path.parent.rmdir()
        except OSError:
            pass

    def forget(self, owner: str) -> int:
        """Delete every upload of `owner` (its session ended); returns how many files went."""
        folder = self.root / owner_folder_name(owner) if owner else None
        if folder is None or not folder.is_dir():
            return 0
        n = sum(1 for f in folder.iterdir() if f.is_file())
        shutil.rmtree(folder, ignore_errors=True)
        return n

    def _delete_if_expired(self, path: Path, now: float) -> int:
        """1 when `path` was older than the retention time and is now deleted, else 0."""
        try:
            if now - path.stat().st_mtime > self.retention_s:
                path.unlink()
                return 1
        except FileNotFoundError:  # another sweep got there first
            pass
        return 0

    def purge_expired(self, now: float | None = None) -> int:
        """Delete uploads older than the retention time, and emptied session folders."""
        now = time.time() if now is None else now
        legacy = [f for f in self.root.iterdir() if f.is_file()]  # uploads kept by older versions
        removed = sum(self._delete_if_expired(f, now) for f in legacy)
        for folder in [f for f in self.root.iterdir() if f.is_dir()]:
            removed += sum(self._delete_if_expired(f, now) for f in list(folder.iterdir()))
            try:
                folder.rmdir()  # only when empty
            except OSError:
                pass
        return removed

    def start_sweeper(self, interval_s: float | None = None) -> threading.Event:
        """Purge expired uploads every `interval_s` (default: a tenth of the retention, 1 to 15
        minutes) in a daemon thread; set the returned event to stop it."""
        interval = interval_s if interval_s is not None else min(900.0, max(60.0, self.retention_s / 10))
        stop = threading.Event()

        def sweep():
            while not stop.wait(interval):
                try:
                    self.purge_expired()
                except OSError as err:  # a vanished folder: try again next time
                    log.warning("upload sweep: %s", err)

        threading.Thread(target=sweep, name="rad3d-upload-sweeper", daemon=True).start()
        return stop


def discard_temp_copy(path: str | Path, temp_root: str | Path) -> None:
    """Delete the web framework's own temporary copy of an upload (and its folder when emptied),
    only when it lies under `temp_root`: once copied into the area, or refused, it is not needed."""
    path, root = Path(path).resolve(), Path(temp_root).resolve()
    if root not in path.parents:
        return
    path.unlink(missing_ok=True)
    parent = path.parent
    while parent != root and root in parent.parents:
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent


def _client_name(stored: str) -> str:
    return stored.split("-", 1)[1] if "-" in stored else stored


def display_name(key: str) -> str:
    """'upload:1a2b3c4d5e6f7a8b-case.nii.gz' → 'case.nii.gz (uploaded)'."""
    if key.startswith(UPLOAD_PREFIX):
        return _client_name(key[len(UPLOAD_PREFIX):]) + " (uploaded)"
    return key
