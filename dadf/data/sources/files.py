"""What every source that reads files shares: `DataError`, the errors that name a missing or damaged file and the
fix, and paths taken relative to the data root."""
from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path


class DataError(ValueError):
    """A dataset cannot be loaded as asked; the message says what is wrong and how to fix it."""


def missing_files_error(source: str, folder: Path, missing: Iterable[Path], downloadable: bool) -> DataError:
    """`missing`: every expected file that is absent, so that one error shows all there is to copy."""
    listing = "\n  ".join(str(p) for p in missing)
    elsewhere = "point dataset.root at a folder that holds them"
    fix = (
        f"set dataset.download=true to download them there, or {elsewhere}"
        if downloadable
        else f"dadf cannot download this dataset: copy the files there, or {elsewhere}"
    )
    return DataError(f"{source}: data not found in {folder}. Missing files:\n  {listing}\nTo fix: {fix}.")


def absent(paths: Iterable[Path]) -> list[Path]:
    return [p for p in paths if not p.exists()]


def corrupt_file_error(path: Path | str, problem: str, downloadable: bool) -> DataError:
    fix = (
        "delete it and set dataset.download=true to download it again, or copy an intact copy there"
        if downloadable
        else "copy an intact copy of it there (dadf cannot download this dataset)"
    )
    return DataError(f"{path} is corrupt or truncated ({problem}). To fix: {fix}.")


@contextlib.contextmanager
def reading(path: Path | str, downloadable: bool = False):
    """Name the file when a decoder fails on it: gzip, zlib, zipfile, tarfile, PIL and scipy raise bare EOFError,
    zlib.error, BadGzipFile, IndexError... that say neither which file it was nor that the file is damaged."""
    try:
        yield
    except (DataError, FileNotFoundError, PermissionError):
        raise  # already say what is wrong and name the file
    except Exception as exn:  # noqa: BLE001 -- whatever a decoder raises on this file means the file is bad
        module = type(exn).__module__.split(".")[0]  # "zlib.error" says more than "error"
        kind = type(exn).__name__ if module == "builtins" else f"{module}.{type(exn).__name__}"
        raise corrupt_file_error(path, f"{kind}: {exn}", downloadable) from exn


def resolve(root: Path, path: str | Path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else root / path
