"""Hugging Face Hub downloads at a pinned revision, and the record of what was fetched.

Every download first asks the Hub which commit the configured revision (a commit
hash, tag or branch) points at, then fetches exactly that commit, so the record
(``download.json`` beside or inside the download) names the data that was used
even when the revision is a moving branch such as ``main``.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def resolve(repo_id: str, repo_type: str, revision: str) -> str | None:
    """The commit ``revision`` of ``repo_id`` points at; None when the Hub API cannot
    be reached (offline mode, a mirror without the API): the download then asks for
    ``revision`` itself, and the record says the commit is unknown."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return HfApi().repo_info(repo_id, repo_type=repo_type, revision=revision).sha
    except (RepositoryNotFoundError, RevisionNotFoundError, GatedRepoError):
        raise  # a wrong id or revision: the download would fail the same way
    except Exception as err:  # connection errors differ between huggingface_hub versions
        log.warning("could not resolve %s@%s on the Hub (%s): fetching the revision as named",
                    repo_id, revision, err)
        return None


def record(repo_id: str, repo_type: str, revision: str, commit: str | None,
           **extra: Any) -> dict[str, Any]:
    """What a download fetched: repository, revision asked for, commit it resolved to."""
    import huggingface_hub

    return {"repo_id": repo_id, "repo_type": repo_type, "revision_requested": revision,
            "resolved_commit": commit, "huggingface_hub": huggingface_hub.__version__, **extra}
