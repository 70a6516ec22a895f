"""Hugging Face Hub sources at a pinned revision, online or from the local cache.

Online, the Hub says which commit a revision (commit hash, tag or branch) points at,
and that commit is fetched into the Hugging Face cache (``huggingface_hub``'s layout:
``<HF_HUB_CACHE>/<type>s--<org>--<name>/{refs,snapshots,blobs}``). Offline
(``HF_HUB_OFFLINE=1``, or the Hub unreachable) the commit comes from that cache: the
ref of a branch or tag, or the snapshot of a commit. Datasets are read from those files
too, never from datasets' Arrow cache (offline it would serve whichever commit it built
last). Either way the commit is what the download record (``download.json``) names, and
a revision the cache or the Hub does not hold fails naming the repository, the revision
and what was found.

Failures say what to do, each in its own words: :class:`GatedError` (token and terms),
:class:`UnreachableError` (the offline recipe, local files instead),
:class:`NotCachedError` (which repository, config and revision the cache lacks) and
:class:`RevisionError` (a pin the Hub does not have).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

COMMIT = re.compile(r"[0-9a-f]{40}")
RECIPE = ("on a machine with Hub access run `python scripts/fill_hf_cache.py` with the same "
          "config and HF_HOME (docs/HUB.md), then run here with HF_HUB_OFFLINE=1")
# files of a model that the workflow loads: config, tokenizer, chat template, weights
MODEL_FILES = ("*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken", "*.py")
# what a job can use instead of the Hub, by repository type (the scripts pass their own)
INSTEAD = {"model": "or point the config at a local model folder (`source` / `model`)",
           "dataset": "or use a local copy of the data"}


class HubError(RuntimeError):
    """A Hub source that cannot be used; the message says what to do."""


class GatedError(HubError):
    """The repository is gated and the token (if any) has no access."""


class UnreachableError(HubError):
    """The Hub cannot be reached and the cache does not hold what is needed."""


class NotCachedError(HubError):
    """Offline, and the cache does not hold the repository, config or revision."""


class RevisionError(HubError):
    """The Hub does not have the pinned revision."""


@dataclass(frozen=True)
class Pin:
    """One Hub source as the config names it."""

    repo_id: str
    repo_type: str  # "dataset" or "model"
    revision: str
    config: str | None = None  # a dataset's config (subset)
    instead: str = ""  # the local alternative, in the config's words

    def __str__(self) -> str:
        config = f", config {self.config}" if self.config else ""
        return f"{self.repo_type} {self.repo_id} at revision {self.revision!r}{config}"

    @property
    def alternative(self) -> str:
        return self.instead or INSTEAD[self.repo_type]


# ----------------------------------------------------------------- environment


def offline() -> bool:
    """Whether Hub requests are switched off (``HF_HUB_OFFLINE``, read by huggingface_hub
    at import and by every library that loads through it)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def go_offline(reason: str) -> None:
    """Switch this process (and its children) to offline mode, so that the loaders that
    follow read the cache at once instead of retrying an unreachable Hub per file."""
    from huggingface_hub import constants

    log.warning("the Hugging Face Hub is unreachable (%s): using the local cache only", reason)
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True
    if "datasets" in sys.modules:  # datasets copies the flag at import
        sys.modules["datasets"].config.HF_HUB_OFFLINE = True


def hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def repo_dir(repo_id: str, repo_type: str) -> Path:
    """The repository's folder in the Hub cache."""
    return hub_cache() / f"{repo_type}s--{repo_id.replace('/', '--')}"


def page(repo_id: str, repo_type: str) -> str:
    """The repository's page on the Hub (where its terms are accepted)."""
    from huggingface_hub import constants

    prefix = "datasets/" if repo_type == "dataset" else ""
    return f"{constants.ENDPOINT}/{prefix}{repo_id}"


# ----------------------------------------------------------------- the cache


def cached_snapshots(repo_id: str, repo_type: str) -> list[str]:
    folder = repo_dir(repo_id, repo_type) / "snapshots"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def cached_refs(repo_id: str, repo_type: str) -> dict[str, str]:
    """Branch or tag -> commit, as huggingface_hub recorded them (``refs/<name>``)."""
    folder = repo_dir(repo_id, repo_type) / "refs"
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): p.read_text().strip()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def cached_commit(pin: Pin) -> str | None:
    """The commit ``pin.revision`` names in the local caches, or None."""
    snapshots = cached_snapshots(pin.repo_id, pin.repo_type)
    if COMMIT.fullmatch(pin.revision):
        return pin.revision if pin.revision in snapshots else None
    commit = cached_refs(pin.repo_id, pin.repo_type).get(pin.revision)
    return commit if commit in snapshots else None


def held(pin: Pin, commit: str) -> list[str] | None:
    """The files the cache holds of ``commit`` (None: no snapshot of it)."""
    folder = repo_dir(pin.repo_id, pin.repo_type) / "snapshots" / commit
    if not folder.is_dir():
        return None
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def found(pin: Pin) -> str:
    """What the caches hold of the repository, for an error message."""
    parts = []
    if snapshots := cached_snapshots(pin.repo_id, pin.repo_type):
        parts.append(f"snapshots of commits {', '.join(snapshots)}")
    if refs := cached_refs(pin.repo_id, pin.repo_type):
        parts.append("refs " + ", ".join(f"{k} -> {v}" for k, v in refs.items()))
    if not parts:
        return f"found nothing of {pin.repo_id} in {hub_cache()}"
    return f"found in {hub_cache()}: " + "; ".join(parts)


# ----------------------------------------------------------------- errors


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _connection_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "no answer from the Hub" (huggingface_hub and datasets use
    different HTTP clients)."""
    from huggingface_hub.errors import OfflineModeIsEnabled

    kinds: list[type[BaseException]] = [OfflineModeIsEnabled, ConnectionError, TimeoutError]
    for module in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError):
            http = __import__(module)
            kinds += [http.ConnectError, http.TimeoutException, http.RemoteProtocolError]
    return tuple(kinds)


def unreachable(err: BaseException) -> bool:
    """Whether ``err`` (or its cause) is a failed connection, or a Hub server error."""
    from huggingface_hub.errors import HfHubHTTPError

    for e in _chain(err):
        if isinstance(e, _connection_errors()):
            return True
        response = getattr(e, "response", None)
        if isinstance(e, HfHubHTTPError) and response is not None and response.status_code >= 500:
            return True
    return False


def gated_error(pin: Pin) -> GatedError:
    token = "the token in use has no access to it" if _has_token() else "no token is set"
    return GatedError(
        f"{pin.repo_id} is gated on the Hugging Face Hub and {token}: log in at "
        f"{page(pin.repo_id, pin.repo_type)} and accept its terms, create a read token at "
        f"https://huggingface.co/settings/tokens and `export HF_TOKEN=hf_...` on the machine "
        f"that runs the download (download jobs are local rules: the one running Snakemake); "
        f"{pin.alternative}")


def _has_token() -> bool:
    from huggingface_hub import get_token

    return get_token() is not None


def unreachable_error(pin: Pin, err: BaseException) -> UnreachableError:
    from huggingface_hub import constants

    return UnreachableError(
        f"cannot reach the Hugging Face Hub at {constants.ENDPOINT} ({type(err).__name__}: "
        f"{str(err)[:200]}) and the cache does not hold {pin} ({found(pin)}); {RECIPE}; "
        f"{pin.alternative}")


def not_cached_error(pin: Pin, what: str = "") -> NotCachedError:
    return NotCachedError(
        f"HF_HUB_OFFLINE is set and the Hugging Face cache does not hold {pin}"
        f"{': ' + what if what else ''} ({found(pin)}); fill it: {RECIPE}; {pin.alternative}")


def revision_error(pin: Pin) -> RevisionError:
    from huggingface_hub import HfApi

    try:
        refs = HfApi().list_repo_refs(pin.repo_id, repo_type=pin.repo_type)
        names = [b.name for b in refs.branches] + [t.name for t in refs.tags]
        there = f"its branches and tags: {', '.join(names) or 'none'}"
    except Exception as err:  # only for the message: the pin is wrong either way
        there = f"its branches could not be listed: {type(err).__name__}"
    return RevisionError(f"{pin.repo_id} ({pin.repo_type}) has no revision {pin.revision!r} on "
                         f"the Hugging Face Hub ({there}); set the pin in the config to a commit "
                         f"hash, tag or branch it has")


def explain(pin: Pin, err: BaseException) -> HubError | None:
    """Our error for a library's failure while loading ``pin``; None when it is none of
    gated, unreachable, not cached or a missing revision."""
    from huggingface_hub.errors import (
        GatedRepoError,
        IncompleteSnapshotError,
        LocalEntryNotFoundError,
        RevisionNotFoundError,
    )

    chain = list(_chain(err))
    if any(isinstance(e, GatedRepoError) for e in chain):
        return gated_error(pin)
    if any(isinstance(e, RevisionNotFoundError) for e in chain):
        return revision_error(pin)
    if any(isinstance(e, (LocalEntryNotFoundError, IncompleteSnapshotError)) for e in chain) \
            or unreachable(err):
        return not_cached_error(pin, str(err)[:300]) if offline() else unreachable_error(pin, err)
    return None


@contextlib.contextmanager
def explained(pin: Pin) -> Iterator[None]:
    """Re-raise a library's Hub failure as the :class:`HubError` that says what to do."""
    try:
        yield
    except HubError:
        raise
    except Exception as err:
        ours = explain(pin, err)
        if ours is None:
            raise
        raise ours from err


# ----------------------------------------------------------------- resolving


def resolve(repo_id: str, repo_type: str, revision: str, config: str | None = None,
            instead: str = "") -> str:
    """The commit ``revision`` of ``repo_id`` points at: the Hub's answer online; offline,
    or when the Hub cannot be reached (then the rest of the job stays offline), the
    cache's. Raises a :class:`HubError` that says what to do."""
    pin = Pin(repo_id, repo_type, revision, config, instead)
    if not offline():
        try:
            return _resolve_online(pin)
        except HubError:
            raise
        except Exception as err:
            if not unreachable(err):
                raise
            go_offline(f"{type(err).__name__}: {str(err)[:200]}")
            if (commit := cached_commit(pin)) is None:
                raise unreachable_error(pin, err) from err
            return commit
    if (commit := cached_commit(pin)) is None:
        raise not_cached_error(pin)
    return commit


def _resolve_online(pin: Pin) -> str:
    """Ask the Hub; a gated repository is checked for access here, before any download."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    api = HfApi()
    try:
        info = api.repo_info(pin.repo_id, repo_type=pin.repo_type, revision=pin.revision,
                             timeout=30)
        if getattr(info, "gated", False):
            api.auth_check(pin.repo_id, repo_type=pin.repo_type)
    except GatedRepoError as err:
        raise gated_error(pin) from err
    except RevisionNotFoundError as err:
        raise revision_error(pin) from err
    except RepositoryNotFoundError as err:
        raise HubError(f"{pin.repo_id} ({pin.repo_type}) is not on the Hugging Face Hub, or is "
                       f"private and the token has no access: check the id in the config "
                       f"(or set HF_TOKEN); {pin.alternative}") from err
    return info.sha


# ----------------------------------------------------------------- fetching


def snapshot(repo_id: str, repo_type: str, revision: str,
             allow_patterns: Sequence[str] | None = None, config: str | None = None,
             instead: str = "") -> tuple[Path, str]:
    """The cache folder of the repository at the commit ``revision`` resolves to (only
    the files matching ``allow_patterns``), downloading what is missing when online;
    and that commit. Offline, huggingface_hub checks the folder against the file list it
    cached with the download."""
    from huggingface_hub import snapshot_download

    pin = Pin(repo_id, repo_type, revision, config, instead)
    commit = resolve(repo_id, repo_type, revision, config, instead)
    # the revision as named, so that a branch's ref is recorded in the cache for offline
    # runs; the snapshot folder's name is the commit it was fetched at
    asked = revision if not offline() else commit
    patterns = list(allow_patterns or []) or None
    try:
        folder = Path(snapshot_download(repo_id, repo_type=repo_type, revision=asked,
                                        allow_patterns=patterns))
    except Exception as err:
        ours = explain(pin, err)
        if ours is None:
            raise
        if isinstance(ours, NotCachedError) and (files := held(pin, commit)) is not None:
            ours = not_cached_error(pin, f"snapshot {commit} holds only {files}, not every "
                                         f"file matching {patterns}")
        raise ours from err
    if folder.name != commit:
        log.warning("%s moved to %s while downloading: using that commit", pin, folder.name)
    return folder, folder.name


def model_snapshot(repo_id: str, revision: str, instead: str = "") -> tuple[Path, str]:
    """A model's files (:data:`MODEL_FILES`) at its pinned commit; fails naming what is
    missing when the snapshot lacks its config or a weight shard."""
    folder, commit = snapshot(repo_id, "model", revision, MODEL_FILES, instead=instead)
    missing = missing_model_files(folder)
    if missing:
        pin = Pin(repo_id, "model", revision, instead=instead)
        raise not_cached_error(pin, f"snapshot {commit} lacks {', '.join(missing)}")
    return folder, commit


def missing_model_files(folder: Path) -> list[str]:
    """Files a loadable model folder needs and ``folder`` lacks: config.json and the
    weights (every shard its safetensors index lists)."""
    import json

    missing = [] if (folder / "config.json").is_file() else ["config.json"]
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing += [s for s in shards if not (folder / s).is_file()]
    elif not any(folder.glob("*.safetensors")):
        missing.append("*.safetensors (weights)")
    return missing


def dataset_files(readme: Path, config: str | None) -> list[str] | None:
    """The repository files of a dataset config, as its card's ``configs`` lists them
    (patterns relative to the repository); None when the card lists no configs (then
    datasets infers the files from the whole repository)."""
    from huggingface_hub import DatasetCard

    if not readme.is_file():
        return None
    configs = DatasetCard.load(readme).data.to_dict().get("configs") or []
    if not configs:
        return None
    name = config or next((c["config_name"] for c in configs if c.get("default")), "default")
    entry = next((c for c in configs if c.get("config_name") == name), None)
    if entry is None:
        raise ValueError(f"config {name!r} is not in the dataset card's configs "
                         f"({[c.get('config_name') for c in configs]})")
    files = entry.get("data_files") or []
    files = [files] if isinstance(files, (str, dict)) else files
    patterns = []
    for item in files:
        paths = item["path"] if isinstance(item, dict) else item
        patterns += [paths] if isinstance(paths, str) else list(paths)
    data_dir = entry.get("data_dir")
    return [f"{data_dir}/{p}" if data_dir else p for p in patterns]


def dataset_snapshot(repo_id: str, config: str | None, revision: str,
                     instead: str = "") -> tuple[Path, str]:
    """The cache folder of a dataset config's files (its card's ``configs`` entry; the
    whole repository when the card lists none) at the commit ``revision`` resolves to."""
    pin = Pin(repo_id, "dataset", revision, config, instead)
    # the card at the revision as named (online this records a branch's ref in the
    # cache); then the config's files at the commit the card came from
    card, commit = snapshot(repo_id, "dataset", revision, ["README.md"], config, instead)
    try:
        patterns = dataset_files(card / "README.md", config)
    except ValueError as err:
        raise HubError(f"{pin}: {err}; set the config name in the config") from err
    return snapshot(repo_id, "dataset", commit,
                    None if patterns is None else ["README.md", *patterns], config, instead)


def load_dataset(repo_id: str, config: str | None, split: str, revision: str,
                 instead: str = "") -> tuple[Any, str]:
    """One split of a Hub dataset config at its pinned commit, and that commit.

    Online and offline alike the files come from the Hub cache's snapshot of that commit
    (the card, then the config's data files), read by datasets as a local folder, so the
    revision is never replaced by whatever datasets built last.
    """
    pin = Pin(repo_id, "dataset", revision, config, instead)
    folder, commit = dataset_snapshot(repo_id, config, revision, instead)
    return _load_folder(pin, folder, commit, split), commit


def _load_folder(pin: Pin, folder: Path, commit: str, split: str) -> Any:
    import datasets
    from datasets.exceptions import DataFilesNotFoundError

    try:
        return datasets.load_dataset(str(folder), pin.config, split=split)
    except (DataFilesNotFoundError, FileNotFoundError) as err:
        if not offline():
            raise
        raise not_cached_error(pin, f"snapshot {commit} holds only {held(pin, commit)} "
                                    f"({err})") from err


# ----------------------------------------------------------------- a config's sources


@dataclass(frozen=True)
class Source:
    """One Hub download of a config: what it is for (``name``) and its pin."""

    name: str  # raw, benchmark:<name>, ood:<name>, base_model[:<base>], baseline:<name>
    pin: Pin

    def fetch(self) -> tuple[Path, str]:
        """Into the cache (online) or checked there (offline): folder and commit."""
        p = self.pin
        if p.repo_type == "model":
            return model_snapshot(p.repo_id, p.revision, p.instead)
        return dataset_snapshot(p.repo_id, p.config, p.revision, p.instead)

    def files(self) -> list[tuple[str, int]]:
        """(path, bytes) of what :meth:`fetch` downloads, from the Hub (online only)."""
        from huggingface_hub import HfApi
        from huggingface_hub.hf_api import RepoFile
        from huggingface_hub.utils import filter_repo_objects

        p = self.pin
        if p.repo_type == "model":
            commit, patterns = resolve(p.repo_id, "model", p.revision), list(MODEL_FILES)
        else:
            card, commit = snapshot(p.repo_id, "dataset", p.revision, ["README.md"], p.config)
            patterns = dataset_files(card / "README.md", p.config)
            patterns = None if patterns is None else ["README.md", *patterns]
        with explained(p):
            tree = [f for f in HfApi().list_repo_tree(p.repo_id, repo_type=p.repo_type,
                                                     revision=commit, recursive=True)
                    if isinstance(f, RepoFile)]
        sizes = {f.path: f.size for f in tree}
        return [(path, sizes[path]) for path in filter_repo_objects(sorted(sizes),
                                                                    allow_patterns=patterns)]


# ----------------------------------------------------------------- records


def record(repo_id: str, repo_type: str, revision: str, commit: str | None,
           **extra: Any) -> dict[str, Any]:
    """What a download fetched: repository, revision asked for, commit it resolved to,
    and whether it came from the Hub or the local cache only."""
    import huggingface_hub

    return {"repo_id": repo_id, "repo_type": repo_type, "revision_requested": revision,
            "resolved_commit": commit, "offline": offline(),
            "huggingface_hub": huggingface_hub.__version__, **extra}
