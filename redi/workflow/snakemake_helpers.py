"""What the rules need from Snakemake's side: the dry-run check, the jobs'
PYTHONPATH, each job's scheduler request, shell arguments, the one JSON
string of a job's hyper-parameters, its code inputs, wildcard constraints
and report captions."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redi.sources import module_inputs
from redi.workflow import config as rc
from redi.workflow import names
from redi.workflow.names import Config


def dry_run_requested(argv: Sequence[str]) -> bool:
    """Whether a snakemake command line asks for a dry run: ``--dry-run``/``--dryrun``,
    or ``n`` among short flags (``-n``, ``-pn``). The executor, hence ``workflow.dryrun``,
    is not known while the Snakefile is parsed, so common.smk reads the argv."""
    return any(a in ("--dry-run", "--dryrun")
               or (a[:1] == "-" and a[1:2] != "-" and a[1:].isalpha() and "n" in a)
               for a in argv)


def pythonpath(basedir: str, current: str | None) -> str:
    """PYTHONPATH for the jobs: this checkout first (the conda envs do not install redi)."""
    return os.pathsep.join(p for p in (basedir, current) if p)


def job_resources(config: Config, job: str, gpu: int | None = None, threads: int = 1,
                  environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A job's ``resources:``, all from the active preset (``resources.jobs``: the
    job's entry, else ``default``) and the user's environment, so that a scheduler gets
    what this preset's job needs: memory, time, and for a GPU job (``gpu`` not None,
    read by the training launcher even when 0) ``gpu`` GPUs with ``threads`` CPUs each,
    else ``cpus_per_task`` CPUs (default ``threads``). No GPUs asked, no GPU partition.
    ``stop_warning_s`` becomes ``--signal=USR1@N``. Local runs ignore all but ``gpu``."""
    jobs = names.preset(config)["resources"]["jobs"]
    request = dict(jobs.get(job, jobs["default"]))
    cpus_per_task = request.pop("cpus_per_task", threads)
    if warning := request.pop("stop_warning_s", None):
        # to the job's steps, i.e. the trainer (not B:, the batch shell only)
        request["slurm_extra"] = f"--signal=USR1@{warning}"
    if gpu is None:
        return {**request, "cpus_per_task": cpus_per_task, **slurm_placement(False, environ)}
    # the slurm plugin passes cpus_per_task in preference to cpus_per_gpu
    cpus = {"cpus_per_gpu": threads} if gpu > 0 else {"cpus_per_task": threads}
    return {"gpu": gpu, **request, **cpus, **slurm_placement(gpu > 0, environ)}


def slurm_placement(gpu: bool = False, environ: Mapping[str, str] | None = None
                    ) -> dict[str, str]:
    """SLURM account/partition from the user's environment, never from the repository:
    REDI_SLURM_ACCOUNT, REDI_SLURM_PARTITION and (jobs with GPUs)
    REDI_SLURM_GPU_PARTITION. Unset -> not passed: the slurm plugin guesses the account
    and uses the default partition. Ignored by local runs."""
    env = os.environ if environ is None else environ
    partition = (gpu and env.get("REDI_SLURM_GPU_PARTITION")) or env.get("REDI_SLURM_PARTITION")
    placement = {"slurm_account": env.get("REDI_SLURM_ACCOUNT"), "slurm_partition": partition}
    return {key: value for key, value in placement.items() if value}


def shell_args(flag: str, paths: str | Iterable[str]) -> str:
    """`flag` and its paths, each shell-quoted, for a params string ("" without paths):
    the shell line uses it as {params.x} (already quoted, so never {params.x:q})."""
    paths = [paths] if isinstance(paths, str) else list(paths)
    return " ".join([flag, *map(shlex.quote, paths)]) if paths else ""


def hp(params: Any) -> str:
    """One canonical JSON string: the job's hyper-parameters (reruns on change)."""
    return rc.canonical_json(params)


def code_inputs(root: str) -> Callable[[str], list[str]]:
    """``code(script)`` for the rules: the entry script and every redi/ module it
    imports (found from ``root``), declared as inputs so that a module edit reruns
    exactly its users."""
    def code(script: str) -> list[str]:
        return [script, *module_inputs(script, root)]
    return code


def one_of(names: Iterable[str]) -> str:
    """A wildcard constraint matching exactly ``names`` (nothing when there are none)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


@dataclass(frozen=True)
class Caption:
    """A report caption looked up by name, ``report/<name>.rst``, for a wildcard rule.

    Snakemake takes one caption file per rule output and renders it in a Jinja
    environment without a loader, so a wildcard rule's generic caption
    (``report/lookup/*.rst``) renders the caption of its job's name from the job's
    ``params``: ``{{ snakemake.params.caption.render(snakemake=snakemake) }}``. (A
    params function that takes ``output`` never triggers a rerun: editing a caption
    reruns nothing, as for a caption file of its own.)
    """

    root: str
    name: str

    @property
    def path(self) -> Path:
        return Path(self.root) / "report" / f"{self.name}.rst"

    def __str__(self) -> str:  # how the report lists the job's params
        return f"report/{self.name}.rst"

    def render(self, **context: Any) -> str:
        from jinja2 import Environment

        env = Environment(trim_blocks=True, lstrip_blocks=True)  # as Snakemake's report
        return env.from_string(self.path.read_text()).render(**context)
