"""Where the results store is, and what identifies a run in it: no database code here, so
that the plugin can read its options without importing SQLAlchemy."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

DEFAULT_PATH = ".inferbench/results.db"
OFF = ("none", "off", "no", "false", "0")


def resolve_url(value: str | None, root: Path) -> str | None:
    """--infer-store / INFERBENCH_STORE / ini inferbench_store -> a SQLAlchemy URL, or None
    (off). A plain path is a SQLite file (relative to `root`); `postgresql://` uses psycopg 3."""
    if value is None or not str(value).strip():
        value = DEFAULT_PATH
    value = str(value).strip()
    if value.lower() in OFF:
        return None
    if "://" not in value:
        path = Path(value).expanduser()
        return f"sqlite:///{(path if path.is_absolute() else Path(root, path)).resolve()}"
    scheme, rest = value.split("://", 1)
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg://{rest}"
    return value


def shown(url: str) -> str:
    """The URL for messages: the password hidden."""
    return re.sub(r"^([A-Za-z0-9+.-]+://[^:/@]*:)[^@]*@", r"\1***@", url)


def run_uid(doc: dict) -> str:
    """What identifies one session's run, the same from the session and from its run file."""
    prov = {k: v for k, v in (doc.get("provenance") or {}).items() if k != "end_time"}
    rows = [(r.get("id"), (r.get("window") or {}).get("start"), r.get("repeat"))
            for r in map(_as_dict, doc.get("results", []))]
    blob = json.dumps({"name": doc.get("name"), "provenance": prov, "results": rows},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _as_dict(result) -> dict:
    return result.to_json() if hasattr(result, "to_json") else dict(result)
