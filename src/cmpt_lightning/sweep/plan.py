"""A sweep's settings and plan: the cells, their resolved configs and their job resources.

:func:`plan_sweep` validates everything and writes nothing; :func:`print_plan` is the dry run
(for SLURM, the sbatch script submitit would submit, made by submitit itself).
"""

from __future__ import annotations

import copy
import json
import math
import re
import shlex
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..choices import Choice
from ..corruptions import parse_corruptions
from ..evaluation import DEFAULT_RATES, TestGrid
from .grid import Cell, ConfigResolver, Grid, expand_grid, is_seed_key, key_aliases, load_grid
from .job import CellState, omp_threads, usable_cpus

__all__ = [
    "REQUEUE_SIGNAL",
    "ExecutorKind",
    "PlannedCell",
    "SlurmSettings",
    "SweepSettings",
    "executor_groups",
    "log_folder",
    "parse_minutes",
    "plan_sweep",
    "print_plan",
    "require_submitit",
    "slurm_parameters",
]

#: The signal a cell's sbatch asks for ``signal_delay_s`` before its time limit (``--signal``):
#: the one Lightning's ``SLURMEnvironment`` listens to (its ``requeue_signal`` default). On it,
#: Lightning saves ``hpc_ckpt_<n>.ckpt`` in the cell's directory and requeues the job (``scontrol
#: requeue``); the requeued job runs the same cell, which resumes from it. submitit's own handler
#: stays on its signal (``SUBMITIT_PREEMPT_SIGNAL``, USR2), which SLURM is not asked to send, so
#: exactly one mechanism requeues a cell.
REQUEUE_SIGNAL = signal.SIGUSR1
#: The most cells a local sweep runs at once by default (each process holds a model and data).
MAX_LOCAL_CELLS = 8


class ExecutorKind(Choice):
    """Where the cells run."""

    LOCAL = "local"  # submitit LocalExecutor: one subprocess per cell on this machine
    DEBUG = "debug"  # submitit DebugExecutor: in this process, one after the other
    SLURM = "slurm"  # submitit SlurmExecutor: a SLURM job array


@dataclass
class SlurmSettings:
    """SLURM resources of each cell's job (``#SBATCH`` options, written by submitit).

    Attributes:
        partition: ``--partition``.
        account: ``--account``.
        qos: ``--qos``.
        gpus_per_node: ``--gpus-per-node``; None: the trainer's devices unless it runs on CPU.
        tasks_per_node: ``--ntasks-per-node``; None: the trainer's devices (Lightning needs one
            task per device); a different number is an error.
        cpus_per_task: ``--cpus-per-task`` (data loader workers + 1 is a good start).
        mem: ``--mem`` per node, e.g. ``64G``.
        array_parallelism: how many cells run at once (``--array=0-N%P``); None: all.
        signal_delay_s: seconds before the time limit at which SLURM sends SIGUSR1, Lightning's
            requeue signal (``--signal=USR1@S``): Lightning saves a checkpoint and requeues the
            cell, which resumes from it. Leave time to write a checkpoint.
        job_name: ``--job-name`` (not ``bash`` or ``interactive``: Lightning would not treat the
            job as a SLURM job, and would neither save nor requeue on the signal).
        setup: shell lines run before the job (``module load ...``, ``source venv/bin/activate``).
        extra: any other sbatch option, e.g. ``{"constraint": "a100", "mail-type": "END"}``.
    """

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpus_per_node: int | None = None
    tasks_per_node: int | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    array_parallelism: int | None = None
    signal_delay_s: int = 90
    job_name: str = "cmpt-sweep"
    setup: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class SweepSettings:
    """A sweep: base config, grid, where it goes and how it runs.

    Attributes:
        configs: the base ``cmpt fit`` config files (later ones override earlier ones).
        grid: the grid file (dotted config keys -> lists of values).
        out: the sweep's run directory (one sub-directory per cell).
        executor: ``local``, ``debug`` or ``slurm``.
        test_rates: test-time missing rates of each cell's one-pass test grid.
        test_types: test-time missing types of the test grid.
        test_corruptions: test-time corruptions of the test grid (``image_noise:0.1``,
            ``text_dropout:0.3``, ...; see :mod:`cmpt_lightning.corruptions`): each is one
            more test pass, whose three availability cases join the cell's ``sweep.csv``;
            empty keeps the base config's ``model.init_args.test_grid.corruptions``.
        time: time limit per cell: minutes or ``[D-]HH:MM:SS`` (SLURM ``--time``, local timeout).
        parallelism: local executor: cells run at once. None: one per usable CPU, at most 8
            (each holds its own model and data in memory), or ``usable CPUs // OMP_NUM_THREADS``
            when that is set. Each cell's torch uses ``usable CPUs // cells`` threads
            (``OMP_NUM_THREADS`` when set), so that the cells do not oversubscribe the cores
            (data loader workers come on top). A cell starts as soon as another ends. With GPUs,
            set it to what fits their memory. ``debug`` runs one cell at a time; SLURM: see
            ``slurm.array_parallelism``.
        dry_run: print the cells and the submission (for SLURM, the sbatch script) and stop.
        wait: wait for the jobs and report failures; None: wait except with SLURM.
        slurm: SLURM resources.
    """

    configs: list[Path]
    grid: Path
    out: Path
    executor: ExecutorKind | str = ExecutorKind.LOCAL
    test_rates: list[float] = field(default_factory=lambda: list(DEFAULT_RATES))
    test_types: list[str] = field(default_factory=lambda: ["text", "image", "both"])
    test_corruptions: list[str] = field(default_factory=list)
    time: str = "24:00:00"
    parallelism: int | None = None
    dry_run: bool = False
    wait: bool | None = None
    slurm: SlurmSettings = field(default_factory=SlurmSettings)

    def __post_init__(self) -> None:
        self.executor = ExecutorKind(self.executor)
        test = TestGrid(  # checks
            rates=list(self.test_rates),
            types=list(self.test_types),
            corruptions=list(self.test_corruptions),
        )
        self.test_rates, self.test_types = test.rates, test.types
        self.test_corruptions = test.corruptions
        self.configs = [Path(c) for c in self.configs]
        self.grid, self.out = Path(self.grid), Path(self.out).resolve()
        parse_minutes(self.time)
        if self.parallelism is not None and self.parallelism < 1:
            msg = f"parallelism must be a positive number of cells, got {self.parallelism!r}"
            raise ValueError(msg)

    @property
    def kind(self) -> ExecutorKind:
        """The executor, as an enum."""
        return ExecutorKind(self.executor)

    @property
    def waits(self) -> bool:
        """Whether the launcher waits for the jobs (always in process, with ``debug``)."""
        if self.kind == ExecutorKind.DEBUG:
            return True
        return self.wait if self.wait is not None else self.kind != ExecutorKind.SLURM

    @property
    def cells_at_once(self) -> int | None:
        """Cells run at once: local, see :attr:`parallelism`; debug 1; SLURM None (the array's)."""
        if self.kind == ExecutorKind.DEBUG:
            return 1
        if self.kind == ExecutorKind.SLURM:
            return None
        if self.parallelism is not None:
            return self.parallelism
        threads = omp_threads()
        return max(1, usable_cpus() // threads) if threads else min(usable_cpus(), MAX_LOCAL_CELLS)

    @property
    def threads_per_cell(self) -> int | None:
        """Torch threads of each local cell (None: the executor's default, debug and SLURM)."""
        cells = self.cells_at_once
        if self.kind != ExecutorKind.LOCAL or cells is None:
            return None
        return omp_threads() or max(1, usable_cpus() // cells)


def parse_minutes(value: int | str) -> int:
    """Minutes of a SLURM time limit: ``90``, ``"4:00:00"``, ``"1-12"``, ``"1-0:30:00"``."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", str(value).strip())
    if isinstance(value, bool) or match is None:
        msg = f"time limit must be minutes or [D-]HH:MM:SS, got {value!r}"
        raise ValueError(msg)
    days, first, second, third = match.groups()
    if days is not None:  # D-H, D-H:M, D-H:M:S
        seconds = int(days) * 86400 + int(first) * 3600 + int(second or 0) * 60 + int(third or 0)
    elif third is not None:  # H:M:S
        seconds = int(first) * 3600 + int(second) * 60 + int(third)
    else:  # M or M:S
        seconds = int(first) * 60 + int(second or 0)
    if seconds <= 0:
        msg = f"time limit must be positive, got {value!r}"
        raise ValueError(msg)
    return math.ceil(seconds / 60)


@dataclass
class PlannedCell:
    """A cell with its directory and resolved config.

    Attributes:
        cell: the grid cell.
        directory: its run directory.
        config: the YAML text of its resolved ``cmpt fit`` config.
        devices: the trainer's devices per node (None when not a number, e.g. ``auto``).
        nodes: the trainer's ``num_nodes``.
        accelerator: the trainer's accelerator.
    """

    cell: Cell
    directory: Path
    config: str
    devices: int | None
    nodes: int
    accelerator: str


def _devices(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, list | tuple):
        return len(value)
    if isinstance(value, str) and re.fullmatch(r"\d+", value.strip()):
        return int(value) or None
    if isinstance(value, str) and "," in value:
        return len([v for v in value.split(",") if v.strip()])
    return None


def plan_sweep(settings: SweepSettings, grid: Grid | None = None) -> tuple[Grid, list[PlannedCell]]:
    """Read and expand the grid and resolve every cell's config; nothing runs, nothing is written.

    Args:
        settings: the sweep.
        grid: the grid itself (e.g. a study's, built in code); None: read ``settings.grid``.

    Raises:
        ValueError: naming the grid key that is unknown, does not apply to the chosen model or
            data class, or has a value of the wrong type.
    """
    grid = load_grid(settings.grid) if grid is None else grid
    resolver = ConfigResolver(settings.configs)
    planned = []
    parsed: dict[str, Any] = {}  # one parse per combination of the non-seed values
    for cell in expand_grid(grid):
        directory = settings.out / cell.name
        fixed = {
            "trainer.default_root_dir": str(directory),
            "test_after_fit": True,
            "model.init_args.test_grid.rates": settings.test_rates,
            "model.init_args.test_grid.types": settings.test_types,
        }
        if settings.test_corruptions:  # else the config's own (usually none)
            fixed["model.init_args.test_grid.corruptions"] = settings.test_corruptions
        config = _parse_cell(resolver, {**grid.config_overrides(cell), **fixed}, parsed)
        _check_corruptions(config, cell)
        trainer = config.trainer
        planned.append(
            PlannedCell(
                cell=cell,
                directory=directory,
                config=resolver.dump(config),
                devices=_devices(trainer.devices),
                nodes=int(trainer.num_nodes or 1),
                accelerator=str(trainer.accelerator),
            )
        )
    executor_groups(settings, planned)  # checks every cell's job resources
    return grid, planned


#: The keys a cell may set on a parsed config directly: they never change another key's type.
_RUN_DIR = "trainer.default_root_dir"


def _parse_cell(resolver: ConfigResolver, overrides: dict[str, Any], parsed: dict[str, Any]) -> Any:
    """A cell's full config, parsed once per combination of its non-seed values.

    Parsing takes about a second per config, so a study of thousands of cells that differ only
    in their seeds would spend most of its planning there. The cells of one combination share
    its parse: each gets a copy with its own seeds and run directory set, which are plain
    integers and a path (a seed that is not an integer is parsed in full, and so refused
    exactly as before). The dumped text is the same as a full parse's (tested).
    """
    direct = {
        k: v for k, v in overrides.items() if k == _RUN_DIR or (is_seed_key(k) and type(v) is int)
    }
    rest = {k: v for k, v in overrides.items() if k not in direct}
    tag = json.dumps(sorted(rest.items(), key=lambda kv: kv[0]), default=repr)
    if tag not in parsed:
        parsed[tag] = resolver.parse(overrides)
        return parsed[tag]
    config = copy.deepcopy(parsed[tag])
    for key, value in direct.items():
        config[key] = value
    return config


def _check_corruptions(config: Any, cell: Cell) -> None:
    """Parse a cell's test-grid corruptions now (the config parser leaves them strings)."""
    test_grid = getattr(getattr(config.model, "init_args", None), "test_grid", None)
    try:
        parse_corruptions(getattr(test_grid, "corruptions", None) or [])
    except ValueError as err:
        msg = f"cell {cell.name!r}: model.init_args.test_grid.corruptions: {err}"
        raise ValueError(msg) from None


def slurm_parameters(settings: SweepSettings, cell: PlannedCell) -> dict[str, Any]:
    """The submitit SlurmExecutor parameters of a cell (cells with equal ones share a job array)."""
    slurm = settings.slurm
    tasks = cell.devices
    if slurm.tasks_per_node is not None:
        if tasks is not None and slurm.tasks_per_node != tasks:
            msg = (
                f"--slurm.tasks_per_node {slurm.tasks_per_node} does not match trainer.devices "
                f"{tasks} of cell {cell.cell.name!r}; Lightning needs one SLURM task per device"
            )
            raise ValueError(msg)
        tasks = slurm.tasks_per_node
    if tasks is None:
        msg = (
            f"trainer.devices of cell {cell.cell.name!r} is not a number of devices; set it in the "
            "config (e.g. 4) or give --slurm.tasks_per_node"
        )
        raise ValueError(msg)
    gpus = slurm.gpus_per_node
    if gpus is None and cell.accelerator != "cpu":
        gpus = tasks
    requeue = {"signal": _requeue_signal(settings.slurm), "requeue": True}
    params: dict[str, Any] = {
        "job_name": slurm.job_name,
        "time": parse_minutes(settings.time),
        "nodes": cell.nodes,
        "ntasks_per_node": tasks,
        "partition": slurm.partition,
        "account": slurm.account,
        "qos": slurm.qos,
        "gpus_per_node": gpus,
        "cpus_per_task": slurm.cpus_per_task,
        "mem": slurm.mem,
        "setup": list(slurm.setup) or None,
        "additional_parameters": {**requeue, **slurm.extra},
    }
    if slurm.array_parallelism is not None:
        params["array_parallelism"] = slurm.array_parallelism
    return {k: v for k, v in params.items() if v is not None}


def _requeue_signal(slurm: SlurmSettings) -> str:
    """``--signal``: :data:`REQUEUE_SIGNAL` ``signal_delay_s`` before the end (see its comment)."""
    name = REQUEUE_SIGNAL.name.removeprefix("SIG")
    problems = {
        "--slurm.extra sets 'signal'": "signal" in slurm.extra,
        f"--slurm.job_name is {slurm.job_name!r}": slurm.job_name in ("bash", "interactive"),
        f"SUBMITIT_PREEMPT_SIGNAL is {name}": require_submitit().JobEnvironment.USR_SIG == name,
        f"--slurm.signal_delay_s is {slurm.signal_delay_s}": slurm.signal_delay_s < 1,
    }
    for problem in (p for p, bad in problems.items() if bad):
        msg = (
            f"{problem}, but a cell must get SIG{name} (Lightning's requeue signal: it saves a "
            "checkpoint and requeues) --slurm.signal_delay_s (> 0) seconds before its end, and "
            "from no other handler; rename the job, drop the option or unset the variable"
        )
        raise ValueError(msg)
    return f"{name}@{slurm.signal_delay_s}"


def executor_groups(
    settings: SweepSettings, cells: Sequence[PlannedCell]
) -> list[tuple[dict[str, Any], list[PlannedCell]]]:
    """Cells grouped by their executor parameters, one job array per group, in grid order."""
    groups: dict[str, tuple[dict[str, Any], list[PlannedCell]]] = {}
    for cell in cells:
        if settings.kind == ExecutorKind.SLURM:
            params = slurm_parameters(settings, cell)
        elif settings.kind == ExecutorKind.LOCAL:
            params = {"timeout_min": parse_minutes(settings.time), "tasks_per_node": 1}
        else:
            params = {}
        groups.setdefault(json.dumps(params, sort_keys=True), (params, []))[1].append(cell)
    return list(groups.values())


def require_submitit() -> Any:
    """The submitit module, or an ImportError that says how to install it."""
    try:
        import submitit
    except ImportError as err:
        msg = "cmpt sweep runs its jobs with submitit: pip install 'cmpt-lightning[cluster]'"
        raise ImportError(msg) from err
    return submitit


def log_folder(settings: SweepSettings) -> Path:
    """Submitit's folder for job files and logs (for SLURM a folder per job: ``%j``)."""
    if settings.kind == ExecutorKind.SLURM:
        return settings.out / "logs" / "%j"
    return settings.out / "logs"


def print_plan(settings: SweepSettings, grid: Grid, planned: Sequence[PlannedCell]) -> None:
    """The dry run: print the cells, their state, and each job array's submission parameters."""
    aliases = key_aliases(grid.varying)
    print(f"sweep of {len(planned)} cell(s) -> {settings.out} (executor: {settings.kind.value})")
    for p in planned:
        state = CellState.read(p.directory)
        status = "finished" if state.done else "failed, retry" if state.failed else "to run"
        values = ", ".join(f"{aliases[k]}={p.cell.overrides[k]!r}" for k in grid.varying)
        print(f"  [{p.cell.index}] {p.cell.name}: {values or 'no varying key'} ({status})")
    fixed = {k: v[0] for k, v in grid.axes.items() if len(v) == 1}
    if fixed:
        print(f"fixed overrides: {fixed}")
    print(
        f"each job: cmpt fit --config {settings.out}/<cell>/config.yaml (test_after_fit, "
        f"test grid rates {settings.test_rates} types {settings.test_types}"
        + (f" corruptions {settings.test_corruptions}" if settings.test_corruptions else "")
        + ")"
    )
    for params, cells in executor_groups(settings, planned):
        if settings.kind == ExecutorKind.SLURM:
            _make_sbatch_string = require_submitit().slurm.slurm._make_sbatch_string
            command = " ".join(
                [
                    shlex.quote(sys.executable),
                    "-u -m submitit.core._submit",
                    shlex.quote(str(log_folder(settings))),
                ]
            )
            array: dict[str, Any] = {"map_count": len(cells)} if len(cells) > 1 else {}
            sbatch = _make_sbatch_string(
                command=command, folder=log_folder(settings), **array, **params
            )
            print(f"--- sbatch of the job array for {len(cells)} cell(s) ---\n{sbatch}")
        else:
            at_once = min(settings.cells_at_once or len(cells), len(cells))
            threads = settings.threads_per_cell
            print(
                f"{settings.kind.value} executor: {len(cells)} cell(s), parameters {params}, "
                f"{at_once} at a time"
                + (f", {threads} torch thread(s) each (of {usable_cpus()} CPUs)" if threads else "")
            )
