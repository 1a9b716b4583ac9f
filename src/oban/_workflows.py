"""Releasing workflow jobs (docs/workflows.md).

After an ack that finished a workflow's job has committed, the instance runs the engine's
release statement for that workflow, as a statement of its own: it sees every dependency that
finished before it, whichever node finished it, so concurrent completions never leave a job
waiting (the last commit's check sees them all). A cancel can make dependents cancellable in
turn: the release runs again for those workflows until nothing changes. The sweeper (leader
only) runs the same release for every workflow with suspended jobs, for a node that died
between its ack and its check, and for jobs cancelled or deleted through the API.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from . import telemetry
from ._acker import refused
from ._engines.base import Engine
from ._looper import Looper

__all__ = ["MAX_CASCADE", "Sweeper", "release"]

logger = logging.getLogger("oban.workflows")

#: At most this many rounds of cancels cascading down a workflow in one release.
MAX_CASCADE = 100
#: Suspended jobs whose workflows the sweeper looks at per tick.
SWEEP_LIMIT = 1_000


Changed = list[tuple[int, str, str, str]]


async def release(
    engine: Engine, workflow_ids: Iterable[str], on_changed: Callable[[Changed], None]
) -> Changed:
    """Release (or cancel) what the finished jobs of ``workflow_ids`` let go, cascading;
    ``on_changed`` hears every changed job: (id, new state, queue, workflow id)."""
    pending = sorted(set(workflow_ids))
    changed: Changed = []
    rounds = 0
    while pending and rounds < MAX_CASCADE:
        rounds += 1
        rows = await _release_round(engine, pending)
        if not rows:
            break
        changed += rows
        on_changed(rows)
        # A cancelled job is finished: its own dependents may be cancellable now.
        pending = sorted({row[3] for row in rows if row[1] == "cancelled"})
    if changed:
        telemetry.execute(
            "oban.workflow.release",
            {
                "released": [row[0] for row in changed if row[1] != "cancelled"],
                "cancelled": [row[0] for row in changed if row[1] == "cancelled"],
                "workflow_ids": sorted({row[3] for row in changed}),
            },
        )
    return changed


async def _release_round(engine: Any, workflow_ids: list[str]) -> Changed:
    """One release statement for ``workflow_ids``. When the database refuses it (a row's
    values: a released job would take a unique key another job holds, say), each workflow
    is released on its own, so that one cannot hold back the others; the refused ones are
    logged and stay as they are. A workflow refused lately is tried on its own from the
    start, so that it does not make every later batch fail first."""
    now = time.monotonic()
    alone = [wid for wid in workflow_ids if _recently_refused(wid, now)]
    batch = [wid for wid in workflow_ids if wid not in alone] if alone else workflow_ids
    changed: Changed = []
    if len(batch) > 1:
        try:
            changed += await engine.release_workflows(batch)
        except Exception as error:
            if not refused(error):
                raise
            alone += batch
    else:
        alone += batch
    for workflow_id in alone:
        try:
            changed += await engine.release_workflows([workflow_id])
        except Exception as error:
            if not refused(error):
                raise
            _note_refused(workflow_id, error)
        else:
            _refused.pop(workflow_id, None)
    return changed


#: Workflows whose release the database refused: when it last refused, and when that was
#: last logged (at most 1,000 remembered).
_refused: dict[str, tuple[float, float]] = {}
#: Seconds a refused workflow is released on its own, and between two warnings about it.
REFUSED_FOR = 60.0


def _recently_refused(workflow_id: str, now: float) -> bool:
    seen = _refused.get(workflow_id)
    return seen is not None and now - seen[0] < REFUSED_FOR


def _note_refused(workflow_id: str, error: BaseException) -> None:
    now = time.monotonic()
    seen = _refused.get(workflow_id)
    if seen is None and len(_refused) >= 1_000:
        _refused.clear()
    if seen is not None and now - seen[1] < REFUSED_FOR:
        _refused[workflow_id] = (now, seen[1])
        return
    _refused[workflow_id] = (now, now)
    logger.warning(
        "the database refused to release the jobs of workflow %s, which stay suspended "
        "(the other workflows go on): %s",
        workflow_id,
        error,
    )


class Sweeper(Looper):
    """Releases what a missed check left waiting (leader only)."""

    name = "workflow-sweeper"
    leader_only = True

    def __init__(
        self,
        *,
        engine: Engine,
        is_leader: Any,
        on_changed: Callable[[Changed], None],
        interval: float = 1.0,
    ) -> None:
        super().__init__(interval=interval, is_leader=is_leader)
        self._engine = engine
        self._on_changed = on_changed
        #: The suspended job the next tick goes on after: each tick looks at the workflows of
        #: the next SWEEP_LIMIT suspended jobs, in id order, so that one workflow with many
        #: suspended jobs never hides the others.
        self._after = 0

    async def tick(self) -> None:
        engine: Any = self._engine
        workflow_ids, self._after = await engine.suspended_workflows(SWEEP_LIMIT, self._after)
        if workflow_ids:
            await release(self._engine, workflow_ids, self._on_changed)
