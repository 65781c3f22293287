"""What a file holds, from its first bytes, so that a wrong container is named in plain words
("a tar archive named .zip", "a NIfTI file named .dcm") instead of a reader's error."""

from __future__ import annotations

import gzip
import struct
import zipfile
import zlib
from pathlib import Path

# Kinds of content, as load_volume names them to a user.
NIFTI, GZIP_NIFTI, GZIP, ZIP, TAR, DICOM, UNKNOWN = (
    "a NIfTI file", "a gzipped NIfTI file", "a gzip file that is not NIfTI", "a zip archive", "a tar archive",
    "a DICOM file", "an unrecognised file",
)


def _nifti_header_size(head: bytes) -> bool:
    if len(head) < 4:
        return False
    return bool({struct.unpack("<i", head[:4])[0], struct.unpack(">i", head[:4])[0]} & {348, 540})


def _gzip_holds_nifti(path: Path) -> bool:
    try:
        with gzip.open(path, "rb") as f:
            return _nifti_header_size(f.read(4))
    except (OSError, EOFError, zlib.error):
        return False


def content_kind(path: Path) -> str:
    """One of the kinds above, from at most a few hundred bytes (and a zip's end record)."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head[:2] == b"\x1f\x8b":
        return GZIP_NIFTI if _gzip_holds_nifti(path) else GZIP
    if len(head) >= 132 and head[128:132] == b"DICM":
        return DICOM
    if len(head) >= 262 and head[257:262] == b"ustar":
        return TAR
    if _nifti_header_size(head) and (head[344:347] == b"n+1" or head[4:7] == b"n+2"):
        return NIFTI
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06") or zipfile.is_zipfile(path):
        return ZIP
    return UNKNOWN
