"""The upload area: a NIfTI file or a zipped DICOM series sent from the browser is checked for
size and type, copied under the upload folder with a server-chosen name, and read as a Volume.
Error messages name the client's file, never a server path."""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from engine.errors import Rad3dError, VolumeError
from engine.io.itk import SINGLE_FILE_ITK_SUFFIXES
from engine.volume import Volume
from ui.paths import child_path, safe_file_name

# .mhd/.nhdr are left out: a detached header cannot be uploaded without its data file.
ACCEPTED_SUFFIXES = (".nii", ".nii.gz", ".zip") + SINGLE_FILE_ITK_SUFFIXES
UPLOAD_PREFIX = "upload:"  # case keys of uploaded volumes: "upload:<stored file name>"


@dataclass
class UploadArea:
    root: Path
    max_bytes: int = 1024 * 1024 * 1024

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
        return f"{uuid.uuid4().hex[:8]}-{shown}"

    def store(self, source: str | Path, client_name: str) -> str:
        """Copy an uploaded temporary file into the area; returns its case key."""
        source = Path(source)
        stored = self.check(client_name, source.stat().st_size)
        shutil.copyfile(source, child_path(self.root, stored))
        return UPLOAD_PREFIX + stored

    def path(self, key: str) -> Path:
        """The file behind a case key, only ever inside the upload area."""
        if not key.startswith(UPLOAD_PREFIX):
            raise VolumeError(f"not an uploaded case: {key!r}")
        name = key[len(UPLOAD_PREFIX):]
        if safe_file_name(name) != name:
            raise VolumeError(f"refused: {name!r} is not a name the upload area gave out")
        path = child_path(self.root, name)
        if not path.is_file():
            raise VolumeError(f"uploaded file {name} is no longer on the server; upload it again")
        return path

    def load(self, key: str) -> Volume:
        from engine.io import load_volume

        path = self.path(key)
        try:
            volume = load_volume(path)
        except Rad3dError as err:  # readers quote the file path: show the client's name instead
            problem = err.problem.replace(str(path), path.name[9:]).replace(str(self.root), "<uploads>")
            raise type(err)(f"{display_name(key)}: {problem}") from None
        volume.source = display_name(key)  # what the page shows; not the server path
        return volume


def display_name(key: str) -> str:
    """'upload:1a2b3c4d-case.nii.gz' → 'case.nii.gz (uploaded)'."""
    if key.startswith(UPLOAD_PREFIX):
        return key[len(UPLOAD_PREFIX) + 9:] + " (uploaded)"
    return key
