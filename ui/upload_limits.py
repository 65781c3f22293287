"""Default limits of the upload area, importable without the readers (the CLI's help shows them)."""

# A thin-slice chest CT (512 × 512 × ~1,000 slices of 0.625 mm, 2 bytes a voxel) is ~500 MiB
# uncompressed; as .nii.gz or zipped DICOM it is smaller. 600 MiB takes any real chest CT.
DEFAULT_MAX_UPLOAD_MB = 600.0
# Uploads are deleted when their browser session ends, and at the latest after this long.
DEFAULT_RETENTION_HOURS = 4.0
