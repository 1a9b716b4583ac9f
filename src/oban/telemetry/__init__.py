"""Telemetry: attach handlers to named events emitted by oban.

>>> from oban import telemetry
>>> telemetry.attach("mine", ["oban.job.stop"], lambda name, meta: None)
>>> telemetry.detach("mine")
"""

from .core import EVENTS, Collector, attach, detach, execute, span

__all__ = ["EVENTS", "Collector", "attach", "detach", "execute", "span"]
