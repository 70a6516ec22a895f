"""Fill the Hugging Face cache with every Hub source of the config, at its pinned revision,
on a machine with Hub access; the workflow then runs with ``HF_HUB_OFFLINE=1`` on machines
without (docs/HUB.md).

Takes the config as Snakemake does (config.yaml, then each ``--configfile``, then
``--config KEY=VALUE``), lists what it downloads (repository, revision, commit, files,
bytes), then downloads it into the cache (``HF_HOME`` / ``HF_HUB_CACHE``); ``--dry-run``
only lists. Gated sources need ``HF_TOKEN`` and accepted terms (the error says which).

    python scripts/fill_hf_cache.py --config preset=paper
    HF_HUB_OFFLINE=1 snakemake <targets> --config preset=paper ...
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere, like the rules' PYTHONPATH

from redi import hub  # noqa: E402
from redi.workflow import ood_plan, plan  # noqa: E402


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Snakemake's rule for config files: nested mappings merge, other values replace."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def load_config(configfiles: list[str], pairs: list[str]) -> dict[str, Any]:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    for path in configfiles:
        merge(config, yaml.safe_load(Path(path).read_text()) or {})
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--config {pair!r}: expected KEY=VALUE")
        config[key] = yaml.safe_load(value)
    plan.validate(config, ROOT)
    return config


def human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def listing(chosen: list[hub.Source]) -> int:
    """Print what each source downloads; returns the total bytes."""
    total = 0
    for source in chosen:
        pin = source.pin
        files = source.files()
        size = sum(n for _, n in files)
        total += size
        config = f" ({pin.config})" if pin.config else ""
        print(f"{source.name:32} {pin.repo_type:7} {pin.repo_id}{config} @ {pin.revision}: "
              f"{len(files)} files, {human(size)}", flush=True)
    print(f"total: {human(total)} into {hub.hub_cache()}", flush=True)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", action="append", default=[],
                        help="YAML merged over config.yaml, as snakemake --configfile")
    parser.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE",
                        help="top-level config values, as snakemake --config")
    parser.add_argument("--only", nargs="*", default=None, metavar="NAME",
                        help="these sources only (names as listed, e.g. raw, baseline:<name>)")
    parser.add_argument("--dry-run", action="store_true", help="list, download nothing")
    args = parser.parse_args()
    if hub.offline():
        raise SystemExit("HF_HUB_OFFLINE is set: this fills the cache from the Hub, run it "
                         "where the Hub is reachable and HF_HUB_OFFLINE is unset")
    chosen = ood_plan.hub_sources(load_config(args.configfile, args.config))
    if args.only is not None:
        unknown = sorted(set(args.only) - {s.name for s in chosen})
        if unknown:
            raise SystemExit(f"--only: no source {unknown}; the config's: "
                             f"{[s.name for s in chosen]}")
        chosen = [s for s in chosen if s.name in args.only]
    if not chosen:
        print("the config downloads nothing from the Hub")
        return
    listing(chosen)
    if args.dry_run:
        return
    for source in chosen:
        start = time.time()
        folder, commit = source.fetch()
        print(f"{source.name}: {source.pin.repo_id} @ {source.pin.revision} = commit {commit} "
              f"in {folder} ({time.time() - start:.0f} s)", flush=True)
    print("done: run the workflow with HF_HUB_OFFLINE=1 and the same HF_HOME", flush=True)


if __name__ == "__main__":
    try:
        main()
    except hub.HubError as err:
        raise SystemExit(f"error: {err}") from None
