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
from collections.abc import Callable, Iterable
from typing import Any

from . import telemetry
from ._engines.base import Engine
from ._looper import Looper

__all__ = ["MAX_CASCADE", "Sweeper", "release"]

logger = logging.getLogger("oban.workflows")

#: At most this many rounds of cancels cascading down a workflow in one release.
MAX_CASCADE = 100
#: Workflows the sweeper looks at per tick.
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
        rows = await engine.release_workflows(pending)  # type: ignore[attr-defined]
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

    async def tick(self) -> None:
        workflow_ids = await self._engine.suspended_workflows(SWEEP_LIMIT)  # type: ignore[attr-defined]
        if workflow_ids:
            await release(self._engine, workflow_ids, self._on_changed)
