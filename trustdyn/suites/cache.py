"""Remove a hub checkpoint from the local Hugging Face cache once the study is done with it.

A public suite can be far larger than a disk (360 Amber checkpoints are about 4.9 TB), so
``run --delete-after`` frees each hub revision as soon as all its units are written.
:func:`free_hub_checkpoint` finds the revision in the cache with huggingface_hub's
``scan_cache_dir`` (by branch or tag name, or by commit hash) and removes it with
``delete_revisions``, which keeps blobs another cached revision still uses. Local folders
and ``TRUSTDYN_HUB_MIRROR`` folders are the user's own copies and are never touched.
"""

from __future__ import annotations

import logging
from pathlib import Path

from huggingface_hub import CachedRepoInfo, constants, scan_cache_dir
from huggingface_hub.errors import CacheNotFound

from trustdyn.suites.base import CheckpointRef
from trustdyn.suites.loading import resolve_source

log = logging.getLogger(__name__)


def _cached_commits(repo: CachedRepoInfo, revision: str) -> list[str]:
    """Return the commit hashes of ``repo`` that ``revision`` (a ref or a hash) names."""
    return [cached.commit_hash for cached in repo.revisions
            if revision in cached.refs or cached.commit_hash == revision]


def free_hub_checkpoint(ref: CheckpointRef, cache_dir: Path | None = None) -> int:
    """Delete the cached files of a hub checkpoint; return the bytes freed (0 if none).

    Args:
        ref: The checkpoint; nothing happens for a local folder or a hub mirror folder.
        cache_dir: The hub cache (default: the one ``from_pretrained`` reads,
            ``$HF_HUB_CACHE`` or ``$HF_HOME/hub``).

    """
    if Path(resolve_source(ref)[0]).is_dir():
        return 0
    revision = ref.revision or "main"
    try:
        # Read at call time, as transformers does (scan_cache_dir's default is fixed at import).
        cache = scan_cache_dir(cache_dir or constants.HF_HUB_CACHE)
    except CacheNotFound:
        log.info("No Hugging Face cache to free %s@%s from.", ref.source, revision)
        return 0
    commits = [commit for repo in cache.repos
               if repo.repo_type == "model" and repo.repo_id == ref.source
               for commit in _cached_commits(repo, revision)]
    if not commits:
        log.info("%s@%s is not in the Hugging Face cache; nothing to free.", ref.source,
                 revision)
        return 0
    strategy = cache.delete_revisions(*commits)
    strategy.execute()
    log.info("Removed %s@%s from the Hugging Face cache (%s freed).", ref.source, revision,
             strategy.expected_freed_size_str)
    return strategy.expected_freed_size
