"""Digests of the local files and folders a stage reads, cheap enough to take on every run.

A file's digest is the SHA-256 of its bytes, remembered by what `stat` says of it (path, size,
modification and change times in ns, inode): in this process, and on disk under `<cache>/digests/`
(one small file per version of a file), so a stage that is skipped never rereads a large source. Any
write to a file changes its change time, so an edited file is always read again; a remembered digest
is only trusted for the very same file state.

- a folder: the digest of its files' names and digests, in name order (hidden names, `.*`, left out;
  `suffixes` keeps only files of those suffixes, not descending, as eval suite folders are read);
- a model folder (`model_fingerprint`): without the weights' bytes (gigabytes): a weights file counts
  by its size, a safetensors file also by its header (every tensor's name, dtype, shape and offsets);
  every other file (config, tokenizer, chat template) by its content;
- a path that does not exist: `ABSENT` (the stage reading it fails on its own, naming it).
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from pathlib import Path

ABSENT = "absent"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack")
SAFETENSORS_HEADER_LIMIT = 100 << 20  # safetensors caps its JSON header at 100 MB
_remembered: dict[tuple, str] = {}


def _state(path: Path) -> tuple:
    info = path.stat()
    return (str(path.resolve()), info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)


def file_digest(path: Path, cache: Path | None = None) -> str:
    """SHA-256 (hex) of a file's bytes, remembered by its `stat` (in this process and under `cache`)."""
    state = _state(path)
    if state in _remembered:
        return _remembered[state]
    slot = None
    if cache is not None:
        slot = Path(cache) / "digests" / hashlib.sha1(repr(state).encode()).hexdigest()
        if slot.is_file() and len(digest := slot.read_text().strip()) == 64:
            _remembered[state] = digest
            return digest
    with open(path, "rb") as stream:
        digest = hashlib.file_digest(stream, "sha256").hexdigest()
    _remembered[state] = digest
    if slot is not None:
        _remember_on_disk(slot, digest)
    return digest


def _remember_on_disk(slot: Path, digest: str) -> None:
    """Write `digest` to `slot` atomically; a cache that cannot be written is only slower."""
    try:
        slot.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=slot.parent, prefix=".digest-")
        with os.fdopen(fd, "w") as out:
            out.write(digest)
        os.replace(temporary, slot)
    except OSError:
        pass


def _files(folder: Path, suffixes: tuple[str, ...] | None) -> list[Path]:
    if suffixes is not None:
        return sorted(p for p in folder.iterdir() if p.suffix in suffixes and p.is_file())
    found = []
    for directory, subdirectories, names in os.walk(folder):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        found += [Path(directory) / name for name in sorted(names) if not name.startswith(".")]
    return found


def _combined(entries: list[tuple[str, str]]) -> str:
    return hashlib.sha256("".join(f"{name}\t{digest}\n" for name, digest in entries).encode()).hexdigest()


def path_digest(path: Path, cache: Path | None = None, suffixes: tuple[str, ...] | None = None) -> str:
    """The digest of a file, or of a folder's files (see the module doc); `ABSENT` when neither."""
    path = Path(path)
    if path.is_file():
        return file_digest(path, cache)
    if not path.is_dir():
        return ABSENT
    files = _files(path, suffixes)
    return _combined([(str(f.relative_to(path)), file_digest(f, cache)) for f in files])


def model_fingerprint(folder: Path, cache: Path | None = None) -> str:
    """A model folder's digest without reading its weights (see the module doc); `ABSENT` when missing."""
    folder = Path(folder)
    if not folder.is_dir():
        return path_digest(folder, cache)
    entries = []
    for file in _files(folder, None):
        if file.suffix in WEIGHT_SUFFIXES:
            digest = (
                f"{file.stat().st_size}:{safetensors_header(file) if file.suffix == '.safetensors' else ''}"
            )
        else:
            digest = file_digest(file, cache)
        entries.append((str(file.relative_to(folder)), digest))
    return _combined(entries)


def safetensors_header(file: Path) -> str:
    """SHA-256 of a safetensors file's JSON header (its first 8 bytes give the header's length)."""
    with open(file, "rb") as stream:
        prefix = stream.read(8)
        length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else 0
        header = stream.read(min(length, SAFETENSORS_HEADER_LIMIT))
    return hashlib.sha256(prefix + header).hexdigest()
