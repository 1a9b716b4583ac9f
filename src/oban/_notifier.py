"""LISTEN/NOTIFY on one dedicated connection per node, fanned out in-process."""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from asyncio import FIRST_COMPLETED
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg import sql

from . import telemetry
from ._tasks import cancel_and_wait
from ._wire import MAX_PAYLOAD_BYTES, decode_payload

logger = logging.getLogger("oban.notifier")

Callback = Callable[[dict[str, Any]], Any]
#: Work to do on the listening connection itself (see PostgresNotifier.on_connection).
ConnectionWork = Callable[["psycopg.AsyncConnection[Any]"], Awaitable[None]]
#: A channel's handler on the connection: given a decoded message it returns the work to do
#: on the connection, ``True`` (handled, nothing to do) or ``False`` (deliver it as usual).
ConnectionHandler = Callable[[dict[str, Any]], "ConnectionWork | bool"]

#: While an outage is younger than FAST_RECONNECT_WINDOW seconds, reconnect attempts are at
#: most FAST_RECONNECT_DELAY apart (jittered): after a database restart, which empties the
#: unlogged peer and producer tables, a node is back (leader elected, producers registered)
#: within about a second of the database accepting connections. Then up to 30 s apart.
FAST_RECONNECT_WINDOW = 30.0
FAST_RECONNECT_DELAY = 0.5
MAX_RECONNECT_DELAY = 30.0


def reconnect_delay(failures: int, down_for: float) -> float:
    """Seconds before connection attempt ``failures + 1`` of an outage ``down_for`` old."""
    cap = FAST_RECONNECT_DELAY if down_for < FAST_RECONNECT_WINDOW else MAX_RECONNECT_DELAY
    return min(cap, 0.25 * 2.0 ** min(failures, 16)) * (0.75 + random.random() / 2)  # noqa: S311


#: Decoded messages waiting for their subscribers; beyond this, new ones are dropped.
MAX_PENDING = 10_000
#: At most one warning per this many seconds about dropped notifications (with a count).
DROP_LOG_INTERVAL = 5.0


class Drops:
    """Counts notifications that were not acted on: the ``oban.notifier.dropped`` event for
    each, and a warning at most every DROP_LOG_INTERVAL seconds with the counts since the last
    one (a flood of hostile notifications must not become a flood of log lines)."""

    def __init__(self, source: str) -> None:
        self._source = source
        self._counts: dict[str, int] = {}
        self._logged_at = -DROP_LOG_INTERVAL

    def __call__(self, channel: str, reason: str, payload: str | dict[str, Any]) -> None:
        telemetry.execute("oban.notifier.dropped", {"channel": channel, "reason": reason})
        key = f"{channel}: {reason}"
        self._counts[key] = self._counts.get(key, 0) + 1
        now = time.monotonic()
        if now - self._logged_at < DROP_LOG_INTERVAL:
            return
        self._logged_at = now
        counts = ", ".join(f"{count} ({what})" for what, count in sorted(self._counts.items()))
        self._counts.clear()
        logger.warning(
            "dropped notifications on %s: %s; the last: %.200r", self._source, counts, payload
        )


class PostgresNotifier:
    """Listens on ``{prefix}.oban_<channel>``; reconnects with backoff when the link drops."""

    def __init__(
        self,
        *,
        beat_interval: float = 30.0,
        conninfo: Any,
        connect_kwargs: Any,
        on_reconnect: Callable[[], None] | None = None,
        prefix: str,
    ) -> None:
        # Either may be a (sync or async) callable, as psycopg_pool allows: resolved at
        # each connect so rotating credentials keep working.
        self._conninfo = conninfo
        self._connect_kwargs = connect_kwargs
        self._beat_interval = beat_interval
        # Called when LISTEN works again after a lost link or failed connection attempts
        # (the database may have restarted meanwhile).
        self._on_reconnect = on_reconnect
        self._prefix = prefix
        self._subscribers: dict[str, dict[int, Callback]] = {}
        self._next_token = 0
        self._task: asyncio.Task[None] | None = None
        # Raw payloads wait here for the delivery task, so that decoding them never holds up
        # the loop reading the connection.
        self._pending: asyncio.Queue[tuple[str, str]] = asyncio.Queue(MAX_PENDING)
        self._delivery: asyncio.Task[None] | None = None
        self._listening: set[str] = set()
        #: Per channel, a handler that may act on a plain JSON message on the listening
        #: connection itself, when nothing else waits to be delivered: the backend that just
        #: sent it is awake, so a statement there answers sooner than one on a pool
        #: connection idle since who knows when (the waiters' read after a relay
        #: notification). Run between packets of notifications, never inside one.
        self.on_connection: dict[str, ConnectionHandler] = {}
        self._work: list[ConnectionWork] = []
        #: Counts (and now and then logs) the notifications that were not acted on.
        self.dropped = Drops(f"{prefix}.oban_*")
        self._connected = asyncio.Event()
        #: "listening" while LISTEN works, "polling" while it does not (producers poll).
        self.status = "starting"
        #: Bumped each time the link comes up: equal at two moments, and ``connected`` at
        #: both, the link did not break in between.
        self.generation = 0

    def full_channel(self, channel: str) -> str:
        """``insert`` -> ``public.oban_insert``."""
        return f"{self._prefix}.oban_{channel}"

    def listen(self, channel: str, callback: Callback) -> int:
        """Call ``callback(payload)`` for each message on ``channel``; returns a token."""
        self._next_token += 1
        self._subscribers.setdefault(channel, {})[self._next_token] = callback
        return self._next_token

    def unlisten(self, token: int) -> None:
        """Remove a subscription."""
        for subscribers in self._subscribers.values():
            subscribers.pop(token, None)

    async def start(self, wait: float = 5.0) -> None:
        """Connect and LISTEN in the background; wait up to ``wait`` seconds for the link."""
        self._delivery = asyncio.create_task(self._deliver(), name="oban-notifier-delivery")
        self._task = task = asyncio.create_task(self._run(), name="oban-notifier")
        connected = asyncio.create_task(self._connected.wait())
        try:
            # Until linked, stopped (stop() ends the task), or ``wait`` seconds.
            await asyncio.wait({connected, task}, timeout=wait, return_when=FIRST_COMPLETED)
        finally:
            connected.cancel()
        if not self._connected.is_set() and not task.done():
            logger.warning(
                "notifier not connected within %gs; it keeps trying, and producers and waits "
                "poll meanwhile",
                wait,
            )

    async def stop(self) -> None:
        """Close the listening connection."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        delivery, self._delivery = self._delivery, None
        if delivery is not None:
            await cancel_and_wait(delivery)
        self._connected.clear()  # closed: it hears nothing any more
        self._listening = set()

    @property
    def connected(self) -> bool:
        """Whether the LISTEN connection is up."""
        return self._connected.is_set()

    def hears(self, channel: str) -> bool:
        """Whether ``channel``'s notifications arrive now (linked and LISTENing)."""
        return self._connected.is_set() and channel in self._listening

    def _set_status(self, status: str, reason: str | None = None) -> None:
        if status == self.status:
            return
        self.status = status
        if status == "listening":
            logger.info("notifier listening on %s.oban_*", self._prefix)
        else:
            logger.warning("notifier down (%s); producers poll until it reconnects", reason)
        telemetry.execute("oban.notifier.status", {"status": status, "reason": reason})

    async def _run(self) -> None:
        failures = 0
        lost_at: float | None = None
        while True:
            try:
                conninfo, kwargs = await self._connect_params()
                conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True, **kwargs)
            except Exception as error:
                failures += 1
                self._set_status("polling", f"cannot connect: {error}")
                lost_at = time.monotonic() if lost_at is None else lost_at
                await asyncio.sleep(reconnect_delay(failures, time.monotonic() - lost_at))
                continue
            try:
                self._listening = set()
                await self._listen_all(conn)
                failures = 0
                self.generation += 1
                self._connected.set()
                self._set_status("listening")
                if lost_at is not None:
                    lost_at = None
                    self._reconnected()
                beat = time.monotonic()
                while True:
                    # Each packet ends the generator (stop_after): work for this connection
                    # runs between packets. Notifications that arrive meanwhile wait in
                    # psycopg's backlog and come first next time.
                    async for notify in conn.notifies(timeout=1.0, stop_after=1):
                        self._receive(notify.channel, notify.payload)
                    work, self._work = self._work, []
                    for job in work:
                        await job(conn)
                    await self._listen_all(conn)
                    if time.monotonic() - beat >= self._beat_interval:
                        # A silently dropped link only shows when we talk on it.
                        async with asyncio.timeout(10.0):
                            await conn.execute("SELECT 1")
                        beat = time.monotonic()
            except asyncio.CancelledError:
                await conn.close()
                raise
            except Exception as error:
                self._connected.clear()
                self._set_status("polling", f"connection lost: {error}")
                lost_at = time.monotonic() if lost_at is None else lost_at
                await conn.close()
                await asyncio.sleep(0.1 * (1 + random.random()))  # noqa: S311

    def _reconnected(self) -> None:
        if self._on_reconnect is None:
            return
        try:
            self._on_reconnect()
        except Exception:
            logger.exception("notifier reconnect handler failed")

    async def _connect_params(self) -> tuple[str, dict[str, Any]]:
        async def resolve(value: Any) -> Any:
            if callable(value):
                value = value()
                if inspect.isawaitable(value):
                    value = await value
            return value

        conninfo = await resolve(self._conninfo)
        kwargs = dict(await resolve(self._connect_kwargs) or {})
        for key in ("autocommit", "row_factory", "prepare_threshold"):
            kwargs.pop(key, None)
        return conninfo, kwargs

    async def _listen_all(self, conn: psycopg.AsyncConnection[Any]) -> None:
        for channel in list(self._subscribers):
            if channel not in self._listening:
                await conn.execute(
                    sql.SQL("LISTEN {}").format(sql.Identifier(self.full_channel(channel)))
                )
                self._listening.add(channel)

    def _receive(self, full_channel: str, payload: str) -> None:
        channel = full_channel.removeprefix(f"{self._prefix}.oban_")
        if not self._subscribers.get(channel):
            return
        if len(payload) > MAX_PAYLOAD_BYTES:  # no NOTIFY sends this: not even queued
            self.dropped(channel, "too long", payload)
            return
        handler = self.on_connection.get(channel)
        # At most one piece of work per packet: a burst goes the usual way (its subscribers
        # coalesce it), not a statement per notification on this connection.
        if handler is not None and not self._work and payload.startswith("{"):
            if self._pending.empty() and self._on_connection(channel, handler, payload):
                return
        try:
            self._pending.put_nowait((channel, payload))
        except asyncio.QueueFull:
            self.dropped(channel, "backlog full", payload)

    def _on_connection(self, channel: str, handler: ConnectionHandler, payload: str) -> bool:
        """Offer a message to its channel's connection handler; whether it took it."""
        try:
            message = decode_payload(payload)
        except Exception:
            return False  # the usual path drops it, and says why
        try:
            taken = handler(message)
        except Exception:
            logger.exception("notification handler failed on %s", self.full_channel(channel))
            return False
        if taken is True or taken is False:
            return taken
        self._work.append(taken)
        return True

    async def _deliver(self) -> None:
        while True:
            channel, payload = await self._pending.get()
            message = await self._decode(channel, payload)
            if message is not None:
                self._dispatch(channel, message)

    async def _decode(self, channel: str, payload: str) -> dict[str, Any] | None:
        try:
            if payload.startswith("{"):
                return decode_payload(payload)
            # Inflating (up to MAX_DECODED_BYTES) happens in a thread, off the event loop.
            return await asyncio.to_thread(decode_payload, payload)
        except Exception as error:
            self.dropped(channel, f"undecodable: {str(error)[:80]}", payload)
            return None

    def _dispatch(self, channel: str, message: dict[str, Any]) -> None:
        for callback in list(self._subscribers.get(channel, {}).values()):
            try:
                callback(message)
            except Exception:
                logger.exception("notification handler failed on %s", self.full_channel(channel))
