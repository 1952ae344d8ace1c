"""Content hashes: a model folder's files (what the registry records and loading verifies) and run keys (what
checkpoints, caches and resumes are keyed by)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import CheckFailedError

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_files(folder: Path) -> dict[str, str]:
    """Relative path (POSIX) → sha256 hex of every file under `folder`, sorted by path."""
    root = Path(folder)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in files}


def verify_files(folder: Path, expected: dict[str, str]) -> None:
    """Refuse a folder whose files differ from the recorded hashes: every recorded file must match, and no
    unrecorded file may be present. Raises `CheckFailedError` naming the first."""
    found = sha256_files(folder)
    for name, digest in sorted(expected.items()):
        if name not in found:
            raise CheckFailedError(f"{Path(folder) / name}: missing (expected sha256 {digest[:12]}…)")
        if found[name] != digest:
            mismatch = f"expected {digest[:12]}…, found {found[name][:12]}…"
            raise CheckFailedError(f"{Path(folder) / name}: sha256 mismatch ({mismatch})")
    extra = sorted(set(found) - set(expected))
    if extra:
        raise CheckFailedError(f"{Path(folder) / extra[0]}: file not in the recorded sha256 list")


def run_key(inputs: dict[str, Any]) -> str:
    """sha256 of the inputs as canonical JSON: the key of a checkpointed run, a cache entry or a cached task."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class ModelFiles:
    """A model folder and the sha256 of each file in it, as recorded when it was registered (or just computed)."""

    folder: Path
    sha256: dict[str, str]

    @classmethod
    def of(cls, folder: Path) -> ModelFiles:
        """A folder as it is now (a model just trained, before it is registered)."""
        return cls(Path(folder), sha256_files(folder))

    @property
    def fingerprint(self) -> str:
        """One hash for the whole folder."""
        return run_key(self.sha256)

    def verified(self) -> Path:
        """The folder, once every file matches its recorded sha256 (a mismatch raises): what every loader of a
        registered model goes through first."""
        verify_files(self.folder, self.sha256)
        return self.folder
