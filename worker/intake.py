"""Turning a records folder into stored blobs (shared by the API's upload route and the worker's
GitHub intake). Reading is done by `rules.submission.load_submission`, which never executes
anything; unpacking is `rules.archive` (limits on members, size, ratio, paths, links)."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from rules.submission import load_submission
from store.blobs import BlobStore


@dataclass
class StoredFolder:
    sha256: str          # content identity of the folder
    name: str
    track: str | None
    folder_key: str      # trees/<sha256>/<track dir>/<name>


def tree_subpath(name: str, track: str | None) -> str:
    """Keep the track folder and the records folder's name in the stored path: the rules read
    both from the path (`track_10min_16mb/<name>`)."""
    leaf = BlobStore.safe_name(name)
    return f"track_{BlobStore.safe_name(track)}/{leaf}" if track else leaf


def store_folder(blobs: BlobStore, path: Path, *, workdir: Path | None = None) -> StoredFolder:
    """Load the folder or archive at `path` (raising rules.errors.InputError for bad input) and
    copy the records folder into the blob store."""
    with tempfile.TemporaryDirectory(prefix="pgolf-intake-", dir=workdir) as tmp:
        sub = load_submission(path, workdir=Path(tmp))
        key = blobs.put_tree(sub.root, sub.sha256, tree_subpath(sub.name, sub.track))
        return StoredFolder(sha256=sub.sha256, name=sub.name, track=sub.track, folder_key=key)
