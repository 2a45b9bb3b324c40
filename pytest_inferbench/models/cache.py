"""A content-addressed artifact cache, safe for many processes converting at once.

An artifact lives at <root>/<hash>/<filename>. The first process to need it takes an exclusive
file lock, builds into a temporary file and renames it into place (atomic on POSIX); the others
wait on the lock, then find the finished file. A crash mid-build leaves no partial artifact.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable


def content_hash(key: dict) -> str:
    blob = json.dumps(key, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def file_hash(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ArtifactCache:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def get_or_build(self, key: dict, filename: str, build: Callable[[Path], None]
                     ) -> tuple[Path, dict]:
        """Return (path, meta). build(tmp_path) writes the artifact; meta says hit/miss and timing."""
        digest = content_hash(key)
        folder = self.root / digest
        target = folder / filename
        meta_file = folder / "meta.json"
        if target.exists() and meta_file.exists():
            return target, {**json.loads(meta_file.read_text()), "cache_hit": True}
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if target.exists() and meta_file.exists():
                    return target, {**json.loads(meta_file.read_text()), "cache_hit": True}
                tmp = folder / f".{filename}.{os.getpid()}.tmp"
                t0 = time.perf_counter()
                try:
                    build(tmp)
                    os.replace(tmp, target)
                finally:
                    if tmp.exists():
                        tmp.unlink()
                meta = {"key": key, "hash": digest, "conversion_s": round(time.perf_counter() - t0, 4)}
                meta_tmp = folder / f".meta.{os.getpid()}.tmp"
                meta_tmp.write_text(json.dumps(meta, indent=1, default=str))
                os.replace(meta_tmp, meta_file)
                return target, {**meta, "cache_hit": False}
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
