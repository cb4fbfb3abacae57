"""Counters every process of the pool can read: one shared memory area, made before forking.

The supervisor owns the header and hands out slots; each worker writes only its own slot. Reads
are not locked: the figures are for decisions (all busy? grow the pool) and for the status page,
where a value one request old does no harm.
"""

from __future__ import annotations

import mmap
import struct
import time
from dataclasses import dataclass

IDLE, BUSY, KEPT, LEAVING = 0, 1, 2, 3  # KEPT: idle between requests on a connection the web server
# keeps open; LEAVING: past its loop, in on_child_exit (the supervisor has a replacement started)
FREE = 255  # a slot no worker holds
STATE_NAMES = {IDLE: "idle", BUSY: "busy", KEPT: "kept", LEAVING: "leaving"}
REQUEST_TEXT = 120  # bytes of "METHOD URI" kept for the request in progress
# start wall time, maxfork reached count, accepted/requests of workers that have exited, stopping,
# kept connections given up, and handed off, by workers that have exited
_HEADER = struct.Struct("=dQQQB7xQQ")
_STOPPING_AT = 32
# pid, generation, state, accepted, requests, started (wall), last state change (monotonic),
# start of the request in progress (monotonic), "METHOD URI" of that request, kept connections
# given up for a waiting one, kept connections parked now (FastCGI: open, served when their next
# request comes), kept connections handed off to another worker
_SLOT = struct.Struct(f"=iIB7xQQddd{REQUEST_TEXT}sQQQ")
# After the header (which the supervisor packs whole), a byte any process writes: kept connections
# wait to be taken (handoff.py); then the slots.
_HANDOFF_PENDING_AT = _HEADER.size
_SLOTS_AT = _HEADER.size + 8
# Byte offsets of the fields written one at a time: each writer touches only its own field.
_PID_AT, _STATE_AT, _ACCEPTED_AT, _REQUESTS_AT, _CHANGED_AT, _REQUEST_AT = 0, 8, 16, 24, 40, 48
_GIVEN_UP_AT = _REQUEST_AT + 8 + REQUEST_TEXT
_PARKED_AT = _GIVEN_UP_AT + 8
_HANDED_OFF_AT = _PARKED_AT + 8
_REQUEST = struct.Struct(f"=d{REQUEST_TEXT}s")
_PID = struct.Struct("=i")
_COUNT = struct.Struct("=Q")
_CHANGED = struct.Struct("=d")


class ScoreboardFull(Exception):
    """Every worker slot is taken (by workers of earlier generations still finishing)."""


@dataclass(frozen=True)
class WorkerStatus:
    """One worker as the scoreboard sees it."""

    slot: int
    pid: int
    generation: int
    state: int
    accepted: int
    requests: int
    started: float
    idle_for: float
    request: str            #: "METHOD URI" of the request in progress (or the last one)
    request_for: float      #: seconds the request in progress has run (0 when there is none)
    request_started: float = 0.0  #: when it began (monotonic): tells one request from the next
    given_up: int = 0       #: kept connections it closed, idle, for a connection that waited
    parked: int = 0         #: kept connections it holds open while it serves others (FastCGI)
    handed_off: int = 0     #: kept connections it passed to another worker (a long request; leaving)

    @property
    def busy(self) -> bool:
        return self.state == BUSY


@dataclass(frozen=True)
class PoolStatus:
    """The pool as a whole, with each worker."""

    start_time: float
    maxfork_reached: int
    accepted: int
    requests: int
    workers: list[WorkerStatus]
    given_up: int = 0  #: kept connections closed, idle, for a connection that waited (the race's count)
    handed_off: int = 0  #: kept connections passed from one worker to another

    @property
    def kept(self) -> int:
        """Connections the web server keeps open, idle between requests: each a worker waits on,
        and those parked."""
        return sum((w.state == KEPT) + w.parked for w in self.workers)

    @property
    def busy(self) -> int:
        return sum(w.busy for w in self.workers)

    @property
    def idle(self) -> int:
        return sum(w.state in (IDLE, KEPT) for w in self.workers)


class Scoreboard:
    """``capacity`` worker slots in anonymous shared memory."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._mem = mmap.mmap(-1, _SLOTS_AT + capacity * _SLOT.size)  # MAP_SHARED | MAP_ANONYMOUS
        _HEADER.pack_into(self._mem, 0, time.time(), 0, 0, 0, 0, 0, 0)
        for slot in range(capacity):
            self._mem[self._offset(slot) + _STATE_AT] = FREE

    def _offset(self, slot: int) -> int:
        return _SLOTS_AT + slot * _SLOT.size

    # -- supervisor --------------------------------------------------------------------------

    def claim(self, generation: int) -> int:
        """A free slot for a worker about to be forked (its pid is filled in by :meth:`assign`)."""
        for slot in range(self.capacity):
            if _SLOT.unpack_from(self._mem, self._offset(slot))[0] == 0:
                _SLOT.pack_into(self._mem, self._offset(slot), -1, generation, IDLE, 0, 0, time.time(),
                                time.monotonic(), 0.0, b"", 0, 0, 0)
                return slot
        raise ScoreboardFull(f"all {self.capacity} worker slots are taken")

    def assign(self, slot: int, pid: int) -> None:
        """Fill in the pid of a claimed slot (the supervisor and the new worker both do, whichever
        runs first). Only the pid: the worker may already be counting in the rest of its slot."""
        _PID.pack_into(self._mem, self._offset(slot) + _PID_AT, pid)

    def release(self, slot: int) -> WorkerStatus:
        """Free the slot of a worker that exited, keeping its counts in the pool's totals; what it
        said last: its state (LEAVING: it had left its loop by itself), the request in progress."""
        last = _worker_status(slot, _SLOT.unpack_from(self._mem, self._offset(slot)), time.monotonic())
        start, reached, old_accepted, old_requests, stopping, old_given_up, old_handed_off = \
            _HEADER.unpack_from(self._mem, 0)
        _HEADER.pack_into(self._mem, 0, start, reached, old_accepted + last.accepted, old_requests + last.requests,
                          stopping, old_given_up + last.given_up, old_handed_off + last.handed_off)
        _SLOT.pack_into(self._mem, self._offset(slot), 0, 0, FREE, 0, 0, 0.0, 0.0, 0.0, b"", 0, 0, 0)
        return last

    def count_maxfork_reached(self) -> None:
        start, reached, *rest = _HEADER.unpack_from(self._mem, 0)
        _HEADER.pack_into(self._mem, 0, start, reached + 1, *rest)

    def set_stopping(self) -> None:
        """The server is stopping: workers serve what waits in the backlog before they exit."""
        self._mem[_STOPPING_AT] = 1

    @property
    def stopping(self) -> bool:
        return self._mem[_STOPPING_AT] == 1

    def set_handoff_pending(self, waiting: bool) -> None:
        """Kept connections were handed off (set after giving them), or are being taken (cleared
        before taking: one given meanwhile sets it again)."""
        self._mem[_HANDOFF_PENDING_AT] = 1 if waiting else 0

    @property
    def handoff_pending(self) -> bool:
        """Kept connections wait to be taken (a byte of shared memory: no system call a look)."""
        return self._mem[_HANDOFF_PENDING_AT] == 1

    def free_slots(self) -> int:
        return sum(1 for slot in range(self.capacity)
                   if _PID.unpack_from(self._mem, self._offset(slot) + _PID_AT)[0] == 0)

    # -- worker ------------------------------------------------------------------------------

    def own_slot(self, slot: int) -> "OwnSlot":
        """What the worker in ``slot`` writes: its state, its counts, its request in progress."""
        return OwnSlot(self._mem, self._offset(slot))

    # -- anyone ------------------------------------------------------------------------------

    def read(self) -> PoolStatus:
        start, reached, old_accepted, old_requests, _, old_given_up, old_handed_off = _HEADER.unpack_from(self._mem, 0)
        now = time.monotonic()
        workers = [_worker_status(slot, fields, now) for slot in range(self.capacity)
                   if (fields := _SLOT.unpack_from(self._mem, self._offset(slot)))[0] > 0]
        return PoolStatus(start, reached, old_accepted + sum(w.accepted for w in workers),
                          old_requests + sum(w.requests for w in workers), workers,
                          old_given_up + sum(w.given_up for w in workers),
                          old_handed_off + sum(w.handed_off for w in workers))

    def count_in_state(self, state: int) -> int:
        """Workers in ``state`` now: every slot's state byte in one strided read (cheap enough
        for a worker to ask after each answer)."""
        first = _SLOTS_AT + _STATE_AT
        return self._mem[first:first + self.capacity * _SLOT.size:_SLOT.size].count(state)

    def busy_counts(self) -> tuple[int, int]:
        """(busy workers, all workers): Net::Waiter's get_busy_kids_count."""
        pool = self.read()
        return pool.busy, len(pool.workers)


def _worker_status(slot: int, fields: tuple, now: float) -> WorkerStatus:
    """A slot's fields as a WorkerStatus. A busy worker's request is in progress only if it
    started since the worker turned busy: until a new connection's request starts, the slot still
    names the last one, which is over."""
    pid, generation, state, accepted, requests, started, changed, request_started, what, given_up, parked, \
        handed_off = fields
    busy = state == BUSY
    in_progress = busy and request_started and request_started >= changed
    return WorkerStatus(slot, pid, generation, state, accepted, requests, started, 0.0 if busy else now - changed,
                        what.rstrip(b"\0").decode("utf-8", "replace"), now - request_started if in_progress else 0.0,
                        request_started, given_up, parked, handed_off)


class OwnSlot:
    """A worker's own slot, written a field at a time at offsets found once: the worker writes
    it several times per request. The counts are kept here too, so a write needs no read: no
    other process writes them while the worker lives (the supervisor reads them when it is gone).
    They start from the slot's, which claim() set to zero: ``requests`` is what this worker served."""

    __slots__ = ("_mem", "_state_at", "_accepted_at", "_requests_at", "_changed_at", "_request_at", "_given_up_at",
                 "_parked_at", "_handed_off_at", "accepted", "requests", "given_up", "handed_off")

    def __init__(self, mem: mmap.mmap, offset: int) -> None:
        self._mem = mem
        self._state_at, self._accepted_at, self._requests_at, self._changed_at, self._request_at, \
            self._given_up_at, self._parked_at, self._handed_off_at = (
                offset + at for at in (_STATE_AT, _ACCEPTED_AT, _REQUESTS_AT, _CHANGED_AT, _REQUEST_AT, _GIVEN_UP_AT,
                                       _PARKED_AT, _HANDED_OFF_AT))
        self.accepted = _COUNT.unpack_from(mem, self._accepted_at)[0]
        self.requests = _COUNT.unpack_from(mem, self._requests_at)[0]
        self.given_up = _COUNT.unpack_from(mem, self._given_up_at)[0]
        self.handed_off = _COUNT.unpack_from(mem, self._handed_off_at)[0]

    def set_state(self, state: int) -> None:
        """IDLE, BUSY, KEPT or LEAVING, and since when."""
        self._mem[self._state_at] = state
        _CHANGED.pack_into(self._mem, self._changed_at, time.monotonic())

    def accept(self) -> None:
        """A connection accepted: the worker is busy with it."""
        self.accepted += 1
        _COUNT.pack_into(self._mem, self._accepted_at, self.accepted)
        self.set_state(BUSY)

    def start_request(self, what: str) -> float:
        """A request ("METHOD URI") starts: for the status page, and so the supervisor can name a
        request that runs past request_timeout. When it started (monotonic)."""
        now = time.monotonic()
        _REQUEST.pack_into(self._mem, self._request_at, now, what.encode("utf-8", "replace")[:REQUEST_TEXT])
        return now

    def count_request(self) -> None:
        """One more request answered."""
        self.requests += 1
        _COUNT.pack_into(self._mem, self._requests_at, self.requests)

    def count_given_up(self) -> None:
        """A kept connection closed while idle, for a new one that waited and no worker could take."""
        self.given_up += 1
        _COUNT.pack_into(self._mem, self._given_up_at, self.given_up)

    def count_handed_off(self, count: int) -> None:
        """Kept connections passed to another worker (handoff.py)."""
        self.handed_off += count
        _COUNT.pack_into(self._mem, self._handed_off_at, self.handed_off)

    def set_parked(self, count: int) -> None:
        """How many kept connections this worker holds parked now."""
        _COUNT.pack_into(self._mem, self._parked_at, count)
