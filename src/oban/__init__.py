"""oban: background jobs for Python on PostgreSQL, compatible with Elixir Oban.

>>> from oban import Oban, worker
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

# isort: off
from ._config import Config
from ._query import CronInfo, JobCounts, JobPage, JobStat, JobStats, NodeInfo
from ._results import JobOutcome
from ._sync import SyncOban
from .job import Cancel, Job, JobState, Record, Snooze, current_job
from .oban import Oban
from .worker import Worker
from .workflow import Workflow, WorkflowStatus

# Last: ``oban.job`` and ``oban.worker`` are also submodules, and type checkers bind a name to
# the submodule at every ``from .job import ...``; the decorators must be the final binding.
from .decorators import job, worker

# isort: on

try:
    __version__ = _version("oban")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "Cancel",
    "Config",
    "CronInfo",
    "Job",
    "JobCounts",
    "JobOutcome",
    "JobPage",
    "JobStat",
    "JobState",
    "JobStats",
    "NodeInfo",
    "Oban",
    "Record",
    "Snooze",
    "SyncOban",
    "Worker",
    "Workflow",
    "WorkflowStatus",
    "__version__",
    "current_job",
    "job",
    "worker",
]
