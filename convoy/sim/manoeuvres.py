"""Platoon manoeuvres negotiated over V2V: join at the rear, leave, split and merge.

Each manoeuvre is an explicit state machine whose every message goes through a ``V2VLink``
(latency in whole steps, range, Bernoulli or Gilbert–Elliott loss, forced outages).  A lost
message is resent after a timeout; after ``max_retries`` resends the manoeuvre aborts, and an
abort undoes everything the manoeuvre did (registry, extra gaps, speed caps, lane-change marks).

The module is engine-agnostic.  An engine integrates it in four steps:

1. Build a ``PlatoonRegistry`` (which trucks are human-driven and may head a platoon) and form
   the initial platoons with ``PlatoonRegistry.form``.
2. Implement ``VehicleView`` over its state (gaps, speeds, lanes, an along-route coordinate).
3. Each control tick while ``ManoeuvreManager.active() > 0`` call
   ``events = manager.step(t_s, view, link)`` once, before integrating the physics, and append
   the events to the run's event log.  The control tick is the link's ``dt_s``; it may be
   coarser than the physics step (e.g. 0.1 s, the BSM period, over a 0.01 s step): ramps and
   timers use elapsed time, so a compiled engine can run ten steps per return to Python.
   With no manoeuvre active the engine need not call ``step`` at all.
4. Each step read the registry's per-vehicle arrays:

   ==================  ========  ==========================================================
   array               dtype     meaning for the engine
   ==================  ========  ==========================================================
   ``platoon_of``      int32     platoon id, -1 = none
   ``pred_of``         int32     the platoon predecessor whose beacons the truck's CACC uses,
                                 -1 for a head or a solo truck
   ``extra_gap_m``     float64   add to the controller's desired bumper gap (opens a gap before
                                 a leave, ramps a join/merge approach down to the CACC gap)
   ``speed_cap_mps``   float64   never drive faster than this (inf = no cap)
   ``set_speed_mps``   float64   cruise set-speed override, NaN = the truck's own; a joiner gets
                                 tail speed + margin so that gap control, not cruise, limits it
   ``lane_change_out`` bool      the truck should leave the platoon's lane when it safely can
   ==================  ========  ==========================================================

   ``registry.version`` increases whenever ``platoon_of``/``pred_of`` change, so the engine can
   rebuild its platoon tables (head, position, follower) only then.  A truck with
   ``platoon_of >= 0`` and ``pred_of == -1`` is a head and drives by its head law (the human
   driver); one with ``pred_of >= 0`` follows that truck by CACC, whoever drives it.  The
   other four arrays change on most ticks of an active manoeuvre; read them in place.

Protocols (``->`` a message through the link, ``=>`` a reliable exchange: request, reply,
resend on timeout, abort after ``max_retries`` resends):

* **join at the rear** (joiner j, platoon P with head h and tail t)::

      REQUEST   j => h  JOIN_REQUEST / JOIN_RESPONSE  (h refuses: platoon_full, leader_busy,
                                                       lane_mismatch, not_behind, incompatible)
      APPROACH  j follows t by its gap controller; extra_gap_m[j] starts at the gap excess and
                ramps to 0 at gap_close_rate_mps; set_speed = speed_cap = speed(t) + margin
      COUPLE    |gap(j, t) - desired_gap(j)| <= couple_tolerance_m held for couple_hold_s
                j => h  JOIN_COUPLED / JOIN_CONFIRM
      DONE      registry: j appended, pred_of[j] = t; caps and extra gap cleared

  The tail needs no message: the joiner listens to its beacons, which it broadcasts anyway.

* **leave** (leaver v at position k, its predecessor a and follower b, if any)::

      REQUEST   v => h  LEAVE_REQUEST / LEAVE_RESPONSE  (k = 0 needs a human-driven member 1:
                                                         else new_head_driverless)
      OPEN      h => b  GAP_OPEN / GAP_ACK (b sets extra_gap_m[b] = leave_gap_m on hearing
                it); wait until gap(b, v) >= desired_gap(b) + leave_gap_m - couple_tolerance_m
      EXIT      lane_change_out[v] = True (a tail also gets speed_cap = speed(a) - drop-back);
                wait until v is off the platoon's lane (or, as tail, leave_clear_gap_m behind a)
      RELINK    registry: v removed, pred_of[b] = a (or b heads the platoon if k = 0)
      CLOSE     extra_gap_m[b] = gap excess to a, ramped to 0 at gap_close_rate_mps
      DONE

* **split** at member index k (head h, new head m = member k)::

      CHECK     m must be human-driven (a driverless truck cannot head a hybrid platoon):
                else abort new_head_driverless
      COMMAND   h => m  SPLIT_COMMAND / SPLIT_ACK
      DONE      registry: members k.. form a new platoon headed by m; the engine's head law
                (human driver) then sets m's gap to the front part

* **merge** (front platoon F with head f and tail t, rear platoon R with head r)::

      REQUEST   r => f  MERGE_REQUEST / MERGE_RESPONSE  (f refuses: platoon_full if
                followers(F) + size(R) > max_followers, leader_busy, lane_mismatch, not_behind)
      APPROACH  as for a join, with r as the joiner; R's members follow r by CACC
      COUPLE    r => f  MERGE_COUPLED / MERGE_CONFIRM
      DONE      registry: R's members appended to F in order, pred_of[r] = t, R dissolved

  r is human-driven and becomes a follower.  That is allowed: the hybrid rule constrains only
  the head (a human must sit in the lead truck's seat, as Beijing's rules require); a
  lead-qualified truck may follow, its driver supervising, and can head again after a split.

Twin simplifications, stated so nobody mistakes them for the field protocol:

* Both ends of a manoeuvre live in one object, so an abort is atomic: the head's reservation is
  released at the same tick the initiator gives up (in the field the head would time out on its
  own).  One manoeuvre at a time holds a platoon (the head answers ``leader_busy`` otherwise).
* A message sent during the tick at step s reaches its receiver at the start of the tick at
  step ``s + max(1, latency_steps)``: a reply never arrives within the tick that caused it.
* A receiver answers every copy of a request it hears, with the decision it took on the first
  (idempotent), so a lost reply costs one resend, not a second decision.

Event log: ``step`` returns dicts in the style of ``convoy.sim.events`` (``t_s``, ``type``,
``vehicle_id``), ``type`` one of ``{join,leave,split,merge}_{request,accept,retry,complete,
abort}``; the other fields are ``manoeuvre`` (id), ``platoon``, ``vehicle`` (row), and where
they apply ``reason``, ``attempt``, ``message``, ``rear_platoon``, ``new_platoon``,
``at_index``.  Refusal reasons reuse the T/ITS 0118-2020 ``JoinRejectReason`` names in
snake_case (``platoonFull`` -> ``platoon_full``, ``leaderBusy`` -> ``leader_busy``,
``incompatibleVehicle`` -> ``incompatible``).

Defaults (``ManoeuvreParams``) are engineering choices unless cited there: no public source
found gives timers for the T/ITS 0118-2020 or ENSEMBLE (D2.8) management exchanges.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from numba import njit

from convoy.vehicle.channel import ChannelSpec
from convoy.vehicle.rng import uniform

# Random streams of the manoeuvre link.  convoy.vehicle.rng's PURPOSE_* use 1-4 for the engine's
# beacons and drivers; these stay clear of them so that adding manoeuvres shifts no engine draw.
PURPOSE_MANOEUVRE_LOSS = 11
PURPOSE_MANOEUVRE_BURST = 12

# 1+N: the operator runs "1+4" platoons (one driver, five trucks); Beijing's rules allow "1+5".
DEFAULT_MAX_FOLLOWERS = 4

_KIND_SLOTS = 64  # message kinds per step in the loss key (MsgKind values stay below this)
_ID_BITS = 31  # vehicle rows below 2**31 keep link keys below 2**62


class ManoeuvreError(ValueError):
    """A manoeuvre request or registry call with bad input; the message says what is allowed."""


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


class PlatoonRegistry:
    """Who is in which platoon, in which order, and the per-vehicle arrays the engine reads.

    Attributes:
        n: number of vehicles (rows).
        human_driven: (n,) bool, read-only; True for a lead-qualified, human-driven truck.
        vehicle_ids: (n,) names used in events (the rows as text when not given).
        max_followers: N of the 1+N rule; a platoon holds at most 1 + N trucks.
        platoon_of: (n,) int32 platoon id, -1 = none.
        pred_of: (n,) int32 platoon predecessor whose beacons the truck uses, -1 = head/solo.
        extra_gap_m: (n,) float64 extra desired bumper gap on top of the controller's [m].
        speed_cap_mps: (n,) float64 speed cap [m/s], inf = none.
        set_speed_mps: (n,) float64 cruise set-speed override [m/s], NaN = the truck's own.
        lane_change_out: (n,) bool, the truck should leave the platoon's lane.
        version: increases with every change of ``platoon_of`` or ``pred_of``.
    """

    def __init__(
        self,
        human_driven: Sequence[bool] | np.ndarray,
        vehicle_ids: Sequence[str] | None = None,
        max_followers: int = DEFAULT_MAX_FOLLOWERS,
    ) -> None:
        hd = np.asarray(human_driven, dtype=bool).reshape(-1).copy()
        n = int(hd.shape[0])
        if n >= 2**_ID_BITS:
            raise ManoeuvreError(f"human_driven: {n} vehicles; at most {2**_ID_BITS - 1} allowed")
        if (
            isinstance(max_followers, bool)
            or not isinstance(max_followers, int)
            or max_followers < 1
        ):
            raise ManoeuvreError(f"max_followers: {max_followers!r}; must be an integer >= 1")
        if vehicle_ids is not None and len(vehicle_ids) != n:
            raise ManoeuvreError(
                f"vehicle_ids: {len(vehicle_ids)} names for {n} vehicles; give one per vehicle"
            )
        hd.flags.writeable = False
        self.n = n
        self.human_driven = hd
        self.vehicle_ids: tuple[str, ...] = (
            tuple(str(s) for s in vehicle_ids)
            if vehicle_ids is not None
            else tuple(map(str, range(n)))
        )
        self.max_followers = int(max_followers)
        self.platoon_of = np.full(n, -1, np.int32)
        self.pred_of = np.full(n, -1, np.int32)
        self.extra_gap_m = np.zeros(n)
        self.speed_cap_mps = np.full(n, np.inf)
        self.set_speed_mps = np.full(n, np.nan)
        self.lane_change_out = np.zeros(n, bool)
        self.version = 0
        self._members: dict[int, list[int]] = {}
        self._next_id = 0

    # ---- queries ----

    def platoons(self) -> tuple[int, ...]:
        """Ids of the platoons that exist, ascending."""
        return tuple(sorted(self._members))

    def exists(self, platoon: int) -> bool:
        """True if ``platoon`` exists."""
        return platoon in self._members

    def members(self, platoon: int) -> tuple[int, ...]:
        """Member rows of ``platoon``, head first."""
        return tuple(self._get(platoon))

    def head(self, platoon: int) -> int:
        """Row of the platoon's head."""
        return self._get(platoon)[0]

    def tail(self, platoon: int) -> int:
        """Row of the platoon's last member."""
        return self._get(platoon)[-1]

    def size(self, platoon: int) -> int:
        """Trucks in the platoon, head included."""
        return len(self._get(platoon))

    def followers(self, platoon: int) -> int:
        """Trucks behind the head (the N of 1+N)."""
        return len(self._get(platoon)) - 1

    def position(self, vehicle: int) -> int:
        """Index of ``vehicle`` in its platoon (0 = head), -1 if it is in none."""
        p = int(self.platoon_of[self._row(vehicle, "vehicle")])
        return -1 if p < 0 else self._members[p].index(vehicle)

    def is_human(self, vehicle: int) -> bool:
        """True if ``vehicle`` is human-driven (may head a platoon)."""
        return bool(self.human_driven[self._row(vehicle, "vehicle")])

    def check(self) -> None:
        """Raise AssertionError if the arrays and the member lists disagree (for tests)."""
        seen = np.full(self.n, -1, np.int32)
        pred = np.full(self.n, -1, np.int32)
        for p, mem in self._members.items():
            assert mem, f"platoon {p} is empty"
            assert self.human_driven[mem[0]], f"platoon {p} is headed by driverless {mem[0]}"
            assert len(mem) - 1 <= self.max_followers, f"platoon {p} has {len(mem) - 1} followers"
            for i, v in enumerate(mem):
                assert seen[v] < 0, f"vehicle {v} in two platoons"
                seen[v] = p
                pred[v] = mem[i - 1] if i > 0 else -1
        assert np.array_equal(seen, self.platoon_of), "platoon_of disagrees with the members"
        assert np.array_equal(pred, self.pred_of), "pred_of disagrees with the members"

    # ---- changes (forming and dissolving are for the caller; the rest for the manager) ----

    def form(self, members: Sequence[int]) -> int:
        """Form a platoon from solo trucks, head first; returns its id.

        Raises:
            ManoeuvreError: a row is out of range, repeated, already in a platoon; the head is
                driverless; or there are more than ``max_followers`` followers.
        """
        mem = [self._row(v, "members") for v in members]
        if not mem:
            raise ManoeuvreError("members: empty; give at least the head")
        if len(set(mem)) != len(mem):
            raise ManoeuvreError(f"members: {list(members)} repeats a vehicle")
        if len(mem) - 1 > self.max_followers:
            raise ManoeuvreError(
                f"members: {len(mem) - 1} followers; at most max_followers={self.max_followers}"
            )
        for v in mem:
            if self.platoon_of[v] >= 0:
                raise ManoeuvreError(
                    f"members: vehicle {v} is already in platoon {int(self.platoon_of[v])}"
                )
        if not self.human_driven[mem[0]]:
            raise ManoeuvreError(
                f"members: head {mem[0]} is driverless; a platoon's head must be human-driven"
            )
        p = self._next_id
        self._next_id += 1
        self._members[p] = mem
        self._relink(p)
        return p

    def dissolve(self, platoon: int) -> None:
        """Make every member of ``platoon`` solo and forget the platoon."""
        for v in self._get(platoon):
            self.platoon_of[v] = -1
            self.pred_of[v] = -1
        del self._members[platoon]
        self.version += 1

    def _append(self, platoon: int, vehicles: Sequence[int]) -> None:
        self._get(platoon).extend(vehicles)
        self._relink(platoon)

    def _remove(self, vehicle: int) -> None:
        p = int(self.platoon_of[vehicle])
        self._members[p].remove(vehicle)
        self.platoon_of[vehicle] = -1
        self.pred_of[vehicle] = -1
        if self._members[p]:
            self._relink(p)
        else:
            del self._members[p]
            self.version += 1

    def _split(self, platoon: int, at_index: int) -> int:
        mem = self._get(platoon)
        rear = mem[at_index:]
        del mem[at_index:]
        self._relink(platoon)
        q = self._next_id
        self._next_id += 1
        self._members[q] = rear
        self._relink(q)
        return q

    def _merge(self, front: int, rear: int) -> None:
        rear_members = self._members.pop(rear)
        self._get(front).extend(rear_members)
        self._relink(front)

    def _relink(self, platoon: int) -> None:
        mem = self._members[platoon]
        idx = np.asarray(mem, np.int64)
        self.platoon_of[idx] = platoon
        self.pred_of[idx[0]] = -1
        self.pred_of[idx[1:]] = idx[:-1]
        self.version += 1

    def _get(self, platoon: int) -> list[int]:
        try:
            return self._members[platoon]
        except KeyError:
            raise ManoeuvreError(
                f"platoon: {platoon!r} does not exist; existing platoons: {self.platoons()}"
            ) from None

    def _row(self, v: int, field: str) -> int:
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or not 0 <= v < self.n:
            raise ManoeuvreError(f"{field}: {v!r} is not a vehicle row; allowed 0..{self.n - 1}")
        return int(v)


# ---------------------------------------------------------------------------------------------
# What the manager needs from the engine
# ---------------------------------------------------------------------------------------------


@runtime_checkable
class VehicleView(Protocol):
    """Read-only view of the engine's state that the manoeuvres observe.

    ``time_s`` is the engine's clock [s].  Vehicles are rows 0..n-1, as in the registry.
    """

    @property
    def time_s(self) -> float:
        """Current time [s]."""
        ...

    def gap_m(self, follower: int, leader: int) -> float:
        """Bumper gap [m] from ``follower`` to ``leader`` along the follower's lane and path if
        ``leader`` is ahead on it (other vehicles in between do not matter), else ``inf``."""
        ...

    def speed_mps(self, v: int) -> float:
        """Speed of ``v`` [m/s]."""
        ...

    def lane(self, v: int) -> int:
        """Lane index of ``v`` (any integer label; equal means the same lane)."""
        ...

    def pos_key(self, v: int) -> float:
        """Any coordinate that grows along the route, for ordering (need not be metres)."""
        ...

    def distance_m(self, a: int, b: int) -> float:
        """Distance between ``a`` and ``b`` [m], for the radio range check."""
        ...

    def desired_gap_m(self, follower: int) -> float:
        """The bumper gap [m] the follower's own controller aims for now, without
        ``extra_gap_m`` (for CACC: standstill gap + time gap × speed)."""
        ...


# ---------------------------------------------------------------------------------------------
# The link
# ---------------------------------------------------------------------------------------------


@njit(cache=True)
def _ge_advance(
    seed: int, pair: int, state: int, slot_from: int, slot_to: int, p_gb: float, p_bg: float
) -> int:
    """Gilbert–Elliott state at ``slot_to`` from the state at ``slot_from`` (one step per slot,
    each drawn from the counter-based generator keyed by the slot)."""
    for k in range(slot_from + 1, slot_to + 1):
        u = uniform(seed, pair, k, PURPOSE_MANOEUVRE_BURST)
        if state == 0:
            if u < p_gb:
                state = 1
        elif u < p_bg:
            state = 0
    return state


@dataclass(frozen=True, slots=True)
class _Outage:
    start_s: float
    end_s: float
    sender: int | None
    receiver: int | None


class V2VLink:
    """Decides whether a manoeuvre message arrives, and when.

    Every decision depends only on (seed, sender, receiver, send step, message kind), drawn
    from ``convoy.vehicle.rng``'s counter-based generator, so it does not depend on the order
    of calls.  A message is lost if the sender and receiver are farther apart than ``range_m``,
    if its send time falls in a forced outage, or by the loss model:

    * Bernoulli: lost with probability ``loss``;
    * Gilbert–Elliott: a two-state chain per vehicle pair (both directions share it: an
      obstruction or fade affects both), stepped once every ``burst_period_steps`` steps; lost
      with ``loss`` in the good state, ``burst_loss`` in the bad one.  The parameters mean
      what they mean in ``convoy.vehicle.channel.ChannelSpec`` with one chain step per beacon.

    Delivered messages arrive ``latency_steps`` steps later (see the module docstring for the
    one-tick minimum).

    Args:
        dt_s: the engine's step [s]; ``t_s`` is turned into a step index by ``round(t_s/dt_s)``.
        seed: scenario seed.
        latency_steps: one-way latency in whole steps (3GPP TS 22.186: 10–25 ms for platooning,
            so 0 at a 0.1 s step).
        range_m: radio range (C-V2X PC5 ~300 m, as ``ChannelSpec``).
        loss: Bernoulli loss, or the good-state loss when bursty.
        burst_loss: bad-state loss; ``None`` = no bursts.
        p_good_to_bad, p_bad_to_good: chain transition probabilities per chain step.
        burst_period_steps: steps per chain step (the beacon period, 1 step by default).
    """

    def __init__(
        self,
        dt_s: float,
        seed: int = 0,
        latency_steps: int = 0,
        range_m: float = 300.0,
        loss: float = 0.0,
        burst_loss: float | None = None,
        p_good_to_bad: float = 0.0,
        p_bad_to_good: float = 1.0,
        burst_period_steps: int = 1,
    ) -> None:
        if not (math.isfinite(dt_s) and dt_s > 0):
            raise ManoeuvreError(f"dt_s: {dt_s!r}; must be a positive number of seconds")
        if not isinstance(seed, int | np.integer) or seed < 0:
            raise ManoeuvreError(f"seed: {seed!r}; must be an integer >= 0")
        if not isinstance(latency_steps, int | np.integer) or latency_steps < 0:
            raise ManoeuvreError(f"latency_steps: {latency_steps!r}; must be an integer >= 0")
        if not range_m > 0:
            raise ManoeuvreError(f"range_m: {range_m!r}; must be > 0 (inf = unlimited)")
        for name, p in (
            ("loss", loss),
            ("burst_loss", 0.0 if burst_loss is None else burst_loss),
            ("p_good_to_bad", p_good_to_bad),
            ("p_bad_to_good", p_bad_to_good),
        ):
            if not 0.0 <= p <= 1.0:
                raise ManoeuvreError(f"{name}: {p!r}; must be a probability in [0, 1]")
        if not isinstance(burst_period_steps, int | np.integer) or burst_period_steps < 1:
            raise ManoeuvreError(
                f"burst_period_steps: {burst_period_steps!r}; must be an integer >= 1"
            )
        self.dt_s = float(dt_s)
        self.seed = int(seed)
        self.latency_steps = int(latency_steps)
        self.range_m = float(range_m)
        self.loss = float(loss)
        self.burst_loss = None if burst_loss is None else float(burst_loss)
        self.p_good_to_bad = float(p_good_to_bad)
        self.p_bad_to_good = float(p_bad_to_good)
        self.burst_period_steps = int(burst_period_steps)
        self._outages: list[_Outage] = []
        # per pair: (slot, state) of the last chain evaluation, a cache only
        self._ge: dict[int, tuple[int, int]] = {}

    @classmethod
    def perfect(cls, dt_s: float) -> V2VLink:
        """No loss, no latency beyond the one-tick minimum, unlimited range."""
        return cls(dt_s, range_m=math.inf)

    @classmethod
    def from_channel(cls, spec: ChannelSpec, dt_s: float, seed: int = 0) -> V2VLink:
        """The link with a ``ChannelSpec``'s latency, range, loss model and outages; the burst
        chain steps once per beacon period, as in the beacon channel."""
        link = cls(
            dt_s,
            seed=seed,
            latency_steps=max(0, round(spec.latency_s / dt_s)),
            range_m=spec.range_m,
            loss=spec.loss,
            burst_loss=spec.burst_loss,
            p_good_to_bad=spec.p_good_to_bad if spec.burst_loss is not None else 0.0,
            p_bad_to_good=spec.p_bad_to_good if spec.burst_loss is not None else 1.0,
            burst_period_steps=max(1, round(1.0 / (spec.rate_hz * dt_s))),
        )
        for start_s, end_s in spec.outages:
            link.force_loss(start_s, end_s)
        return link

    def force_loss(
        self, start_s: float, end_s: float, sender: int | None = None, receiver: int | None = None
    ) -> None:
        """Lose every message sent in [start_s, end_s) from ``sender`` to ``receiver``
        (``None`` = any), e.g. to test aborts."""
        if not end_s > start_s:
            raise ManoeuvreError(f"end_s: {end_s!r}; must be after start_s={start_s!r}")
        self._outages.append(_Outage(float(start_s), float(end_s), sender, receiver))

    def step_index(self, t_s: float) -> int:
        """The step index of time ``t_s``."""
        return round(t_s / self.dt_s)

    def delivery_step(self, send_step: int) -> int:
        """The step at whose tick a message sent at ``send_step`` is handed over."""
        return send_step + max(1, self.latency_steps)

    def bad_state(self, a: int, b: int, step: int) -> bool:
        """True if the pair's Gilbert–Elliott chain is in the bad state at ``step``."""
        if self.burst_loss is None or self.p_good_to_bad <= 0.0 or step < 0:
            return False
        slot = step // self.burst_period_steps
        pair = (min(a, b) << _ID_BITS) | max(a, b)
        last_slot, state = self._ge.get(pair, (-1, 0))
        if slot < last_slot:  # asked about the past: replay from the start
            last_slot, state = -1, 0
        state = _ge_advance(
            self.seed, pair, state, last_slot, slot, self.p_good_to_bad, self.p_bad_to_good
        )
        self._ge[pair] = (slot, state)
        return state == 1

    def delivered(
        self, sender: int, receiver: int, send_step: int, kind: int, distance_m: float
    ) -> bool:
        """True if a message of ``kind`` sent at ``send_step`` arrives."""
        t_s = send_step * self.dt_s
        for o in self._outages:
            if (
                o.start_s <= t_s < o.end_s
                and (o.sender is None or o.sender == sender)
                and (o.receiver is None or o.receiver == receiver)
            ):
                return False
        if not distance_m <= self.range_m:
            return False
        bad = self.bad_state(sender, receiver, send_step)
        p_loss = self.burst_loss if bad and self.burst_loss is not None else self.loss
        if p_loss <= 0.0:
            return True
        key = (sender << _ID_BITS) | receiver
        u = uniform(self.seed, key, send_step * _KIND_SLOTS + int(kind), PURPOSE_MANOEUVRE_LOSS)
        return bool(u >= p_loss)


# ---------------------------------------------------------------------------------------------
# Messages and parameters
# ---------------------------------------------------------------------------------------------


class MsgKind(IntEnum):
    """Manoeuvre message kinds.  JOIN_REQUEST/JOIN_RESPONSE and LEAVE_REQUEST are T/ITS
    0118-2020's PlatoonJoinRequest, PlatoonJoinAccept and PlatoonLeave; the rest are convoy's."""

    JOIN_REQUEST = 1
    JOIN_RESPONSE = 2
    JOIN_COUPLED = 3
    JOIN_CONFIRM = 4
    LEAVE_REQUEST = 5
    LEAVE_RESPONSE = 6
    GAP_OPEN = 7
    GAP_ACK = 8
    SPLIT_COMMAND = 9
    SPLIT_ACK = 10
    MERGE_REQUEST = 11
    MERGE_RESPONSE = 12
    MERGE_COUPLED = 13
    MERGE_CONFIRM = 14


@dataclass(frozen=True, slots=True)
class Message:
    """One manoeuvre message.

    Attributes:
        kind: what it is.
        sender, receiver: vehicle rows.
        manoeuvre: id of the manoeuvre it belongs to.
        exchange: sequence number of the request/reply exchange within the manoeuvre.
        attempt: 1 for the first copy of a request, 2.. for resends (replies copy it).
        accepted: a reply's decision (True for requests).
        reason: why a reply refuses, else None.
    """

    kind: MsgKind
    sender: int
    receiver: int
    manoeuvre: int
    exchange: int
    attempt: int
    accepted: bool = True
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ManoeuvreParams:
    """Timers and gaps of the manoeuvres (engineering choices unless a source is named).

    Attributes:
        response_timeout_s: wait for a reply before resending: 0.5 s = 10 periods of the
            20 Hz T/ITS 0118-2020 control stream, and the beacon channel's stale limit
            (``ChannelSpec.stale_after_s``); 20x the 3GPP TS 22.186 25 ms latency bound.
        max_retries: resends before giving up (4 copies in all, so 2 s to abort by default).
        approach_speed_margin_mps: how much faster than the tail a joiner may drive.  Plexe's
            JoinAtBack uses platoon speed + 30 km/h for cars; 5 m/s (18 km/h) is kept for 49 t
            trucks.
        gap_close_rate_mps: rate at which an extra gap is ramped down, i.e. the closing speed
            the controller is asked to hold (2 m/s).
        approach_timeout_s: give up an approach (join, merge) after this long (180 s: closing
            the 300 m radio range at 2 m/s takes 150 s).
        couple_tolerance_m: |gap - desired gap| that counts as "in position" (1 m).
        couple_hold_s: how long the joiner must stay in position before coupling (2 s).
        leave_gap_m: extra gap the follower opens before a truck leaves from the middle (15 m,
            room for a 16.5 m truck's lane change at CACC gaps of ~10 m).
        open_gap_timeout_s: give up if the gap is not open after this long (30 s).
        exit_timeout_s: give up if the leaver has not left the lane after this long (60 s).
        leave_drop_back_mps: a leaving tail is capped this far below its predecessor's speed,
            so it drops back where it cannot change lanes (2 m/s).
        leave_clear_gap_m: a tail has left once it is this far behind (50 m = 2 s at 25 m/s,
            beyond the CACC gap and a typical ACC time gap).
    """

    response_timeout_s: float = 0.5
    max_retries: int = 3
    approach_speed_margin_mps: float = 5.0
    gap_close_rate_mps: float = 2.0
    approach_timeout_s: float = 180.0
    couple_tolerance_m: float = 1.0
    couple_hold_s: float = 2.0
    leave_gap_m: float = 15.0
    open_gap_timeout_s: float = 30.0
    exit_timeout_s: float = 60.0
    leave_drop_back_mps: float = 2.0
    leave_clear_gap_m: float = 50.0

    def __post_init__(self) -> None:
        for name in (
            "response_timeout_s",
            "approach_speed_margin_mps",
            "gap_close_rate_mps",
            "approach_timeout_s",
            "couple_tolerance_m",
            "open_gap_timeout_s",
            "exit_timeout_s",
            "leave_clear_gap_m",
        ):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ManoeuvreError(f"{name}: {v!r}; must be a positive finite number")
        for name in ("couple_hold_s", "leave_gap_m", "leave_drop_back_mps"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ManoeuvreError(f"{name}: {v!r}; must be a finite number >= 0")
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ManoeuvreError(f"max_retries: {self.max_retries!r}; must be an integer >= 0")


# ---------------------------------------------------------------------------------------------
# State machines
# ---------------------------------------------------------------------------------------------


class _Ctx:
    """What a manoeuvre sees during one tick: time, the engine's view, and the manager's
    services (send, emit, locks)."""

    def __init__(
        self, mgr: ManoeuvreManager, t_s: float, step: int, view: VehicleView, link: V2VLink
    ) -> None:
        self.mgr = mgr
        self.t_s = t_s
        self.step = step
        self.view = view
        self.link = link
        self.reg = mgr.registry
        self.params = mgr.params

    def send(self, msg: Message) -> None:
        self.mgr._send(msg, self)

    def emit(self, type_: str, vehicle: int, fields: dict[str, Any]) -> None:
        self.mgr._emit(self.t_s, type_, vehicle, fields)


class _Manoeuvre:
    """Common machinery: the reliable exchange, timers, abort and completion.

    Subclasses define ``KIND`` (event prefix), a ``State`` enum with ``DONE`` and ``ABORTED``,
    ``TRANSITIONS`` (allowed moves; checked), and the hooks ``_begin``, ``_tick``,
    ``_answer`` (receiver side of a request), ``_on_reply`` and ``_undo``.
    """

    KIND = ""
    State: Any = None
    # allowed moves; any state may also go to ABORTED (through ``abort``)
    TRANSITIONS: ClassVar[dict[Any, frozenset[Any]]] = {}
    # request kinds this manoeuvre's receiver side answers, and the reply kind
    ANSWERS: ClassVar[dict[MsgKind, MsgKind]] = {}

    def __init__(self, mid: int, initiator: int, platoon: int) -> None:
        self.id = mid
        self.initiator = initiator
        self.platoon = platoon
        self.state: Any = None
        self.state_since_s = 0.0
        self.last_t_s: float | None = None
        self.reason: str | None = None
        self.locks: list[int] = []
        self.vehicles: list[int] = [initiator]
        # the exchange in progress
        self._ex_seq = 0
        self._ex_req: Message | None = None
        self._ex_reply_kind: MsgKind | None = None
        self._ex_sent_s = 0.0
        # receiver side: decision per exchange (answered identically to every copy)
        self._decisions: dict[int, tuple[bool, str | None]] = {}

    # ---- life cycle ----

    @property
    def finished(self) -> bool:
        return self.state is not None and self.state.name in ("DONE", "ABORTED")

    def _goto(self, new: Any, ctx: _Ctx) -> None:
        if new not in self.TRANSITIONS.get(self.state, frozenset()):
            raise RuntimeError(f"{self.KIND} {self.id}: no transition {self.state} -> {new}")
        self.state = new
        self.state_since_s = ctx.t_s

    def _in_state_s(self, ctx: _Ctx) -> float:
        return ctx.t_s - self.state_since_s

    def tick(self, ctx: _Ctx) -> None:
        """Advance by one control tick: exchange timeouts, then the subclass's state."""
        dt_s = 0.0 if self.last_t_s is None else ctx.t_s - self.last_t_s
        self.last_t_s = ctx.t_s
        if self.state is None:
            self._begin(ctx)
            return
        if self._ex_req is not None and ctx.t_s - self._ex_sent_s >= (
            ctx.params.response_timeout_s - 1e-9
        ):
            req = self._ex_req
            if req.attempt > ctx.params.max_retries:
                self.abort(ctx, "no_response")
                return
            again = Message(
                req.kind, req.sender, req.receiver, self.id, req.exchange, req.attempt + 1
            )
            self._ex_req = again
            self._ex_sent_s = ctx.t_s
            self._event(
                ctx,
                f"{self.KIND}_retry",
                self.initiator,
                platoon=self.platoon,
                attempt=again.attempt,
                message=again.kind.name.lower(),
            )
            ctx.send(again)
        if not self.finished:
            self._tick(ctx, dt_s)

    def request(self, ctx: _Ctx, kind: MsgKind, reply: MsgKind, sender: int, receiver: int) -> None:
        """Start a reliable exchange: send ``kind``, expect ``reply`` (resent on timeout)."""
        self._ex_seq += 1
        msg = Message(kind, sender, receiver, self.id, self._ex_seq, 1)
        self._ex_req = msg
        self._ex_reply_kind = reply
        self._ex_sent_s = ctx.t_s
        ctx.send(msg)

    @property
    def waiting(self) -> bool:
        """True while an exchange awaits its reply."""
        return self._ex_req is not None

    def on_message(self, msg: Message, ctx: _Ctx) -> None:
        """A message of this manoeuvre has arrived."""
        if self.finished:
            return
        req = self._ex_req
        if (
            req is not None
            and msg.kind == self._ex_reply_kind
            and msg.exchange == req.exchange
            and msg.receiver == req.sender
        ):
            self._ex_req = None
            self._ex_reply_kind = None
            self._on_reply(msg, ctx)
            return
        if msg.kind in self.ANSWERS:
            decision = self._decisions.get(msg.exchange)
            if decision is None:
                decision = self._answer(msg, ctx)
                if decision is None:  # not addressed to someone who can answer: stay silent
                    return
                self._decisions[msg.exchange] = decision
            ok, why = decision
            ctx.send(
                Message(
                    self.ANSWERS[msg.kind],
                    msg.receiver,
                    msg.sender,
                    self.id,
                    msg.exchange,
                    msg.attempt,
                    ok,
                    why,
                )
            )
        # anything else is stale (a late copy of an exchange already finished): ignored

    def lock(self, ctx: _Ctx, platoon: int) -> bool:
        """Hold ``platoon`` for this manoeuvre; False if another manoeuvre holds it."""
        owner = ctx.mgr._locks.get(platoon)
        if owner is not None and owner != self.id:
            return False
        ctx.mgr._locks[platoon] = self.id
        if platoon not in self.locks:
            self.locks.append(platoon)
        return True

    def _release(self, ctx: _Ctx) -> None:
        for p in self.locks:
            if ctx.mgr._locks.get(p) == self.id:
                del ctx.mgr._locks[p]
        self.locks.clear()
        self._ex_req = None

    def abort(self, ctx: _Ctx, reason: str) -> None:
        """Undo everything and end with ``reason``."""
        self._undo(ctx)
        self._release(ctx)
        self.reason = reason
        self.state = self.State.ABORTED
        self._event(
            ctx,
            f"{self.KIND}_abort",
            self.initiator,
            platoon=self.platoon,
            reason=reason,
            **self._fields(),
        )

    def complete(self, ctx: _Ctx) -> None:
        """End successfully."""
        self._release(ctx)
        self._goto(self.State.DONE, ctx)
        self._event(
            ctx, f"{self.KIND}_complete", self.initiator, platoon=self.platoon, **self._fields()
        )

    def _event(self, ctx: _Ctx, type_: str, vehicle: int, **fields: Any) -> None:
        ctx.emit(type_, vehicle, {"manoeuvre": self.id, **fields})

    # ---- hooks ----

    def _fields(self) -> dict[str, Any]:
        return {}

    def _begin(self, ctx: _Ctx) -> None:
        raise NotImplementedError

    def _tick(self, ctx: _Ctx, dt_s: float) -> None:
        """Per-tick work of the current state (after timeouts)."""

    def _answer(self, msg: Message, ctx: _Ctx) -> tuple[bool, str | None] | None:
        return None

    def _on_reply(self, msg: Message, ctx: _Ctx) -> None:
        """The awaited reply has arrived."""

    def _undo(self, ctx: _Ctx) -> None:
        """Clear what this manoeuvre set (registry arrays it touched)."""


def _clear_vehicle(reg: PlatoonRegistry, v: int) -> None:
    reg.extra_gap_m[v] = 0.0
    reg.speed_cap_mps[v] = np.inf
    reg.set_speed_mps[v] = np.nan
    reg.lane_change_out[v] = False


def _approach_target(
    ctx: _Ctx, mover: int, tail: int, extra_m: float, dt_s: float
) -> tuple[float, float]:
    """One approach tick: the ramped extra gap and the gap error now."""
    reg, view, par = ctx.reg, ctx.view, ctx.params
    extra_m = max(0.0, extra_m - par.gap_close_rate_mps * dt_s)
    cap = view.speed_mps(tail) + par.approach_speed_margin_mps
    reg.extra_gap_m[mover] = extra_m
    reg.speed_cap_mps[mover] = cap
    reg.set_speed_mps[mover] = cap
    return extra_m, view.gap_m(mover, tail) - view.desired_gap_m(mover)


def _same_path(view: VehicleView, follower: int, leader: int) -> bool:
    return view.lane(follower) == view.lane(leader) and math.isfinite(view.gap_m(follower, leader))


def _check_rear(view: VehicleView, mover: int, tail: int) -> str | None:
    """Why ``mover`` cannot approach ``tail`` from behind, or None."""
    if view.lane(mover) != view.lane(tail):
        return "lane_mismatch"
    if view.pos_key(mover) >= view.pos_key(tail) or not math.isfinite(view.gap_m(mover, tail)):
        return "not_behind"
    return None


class JoinState(Enum):
    """States of a join at the rear."""

    REQUEST = "request"
    APPROACH = "approach"
    COUPLE = "couple"
    DONE = "done"
    ABORTED = "aborted"


class MergeState(Enum):
    """States of a merge of two platoons (the same shape as a join)."""

    REQUEST = "request"
    APPROACH = "approach"
    COUPLE = "couple"
    DONE = "done"
    ABORTED = "aborted"


class _RearApproach(_Manoeuvre):
    """Request, approach the front platoon's tail, couple: shared by join and merge.

    Subclasses give the message kinds, ``_refusal`` (the head's checks beyond locking) and
    ``_couple`` (the registry change once the head confirms).
    """

    REQ = MsgKind.JOIN_REQUEST
    RESP = MsgKind.JOIN_RESPONSE
    COUPLED = MsgKind.JOIN_COUPLED
    CONFIRM = MsgKind.JOIN_CONFIRM

    def __init__(self, mid: int, mover: int, platoon: int) -> None:
        super().__init__(mid, mover, platoon)
        self.extra_m = 0.0
        self.in_position_since_s: float | None = None
        self.tail = -1

    def _send_request(self, ctx: _Ctx) -> None:
        head = ctx.reg.head(self.platoon)
        self.request(ctx, self.REQ, self.RESP, self.initiator, head)

    def _refusal(self, ctx: _Ctx) -> str | None:
        raise NotImplementedError

    def _couple(self, ctx: _Ctx) -> None:
        raise NotImplementedError

    def _answer(self, msg: Message, ctx: _Ctx) -> tuple[bool, str | None] | None:
        reg = ctx.reg
        if not reg.exists(self.platoon) or reg.head(self.platoon) != msg.receiver:
            return None
        if msg.kind == self.COUPLED:
            return True, None
        why = self._refusal(ctx) or _check_rear(ctx.view, self.initiator, reg.tail(self.platoon))
        if why is not None:
            return False, why
        if not self.lock(ctx, self.platoon):
            return False, "leader_busy"
        return True, None

    def _on_reply(self, msg: Message, ctx: _Ctx) -> None:
        if not msg.accepted:
            self.abort(ctx, msg.reason or "refused")
        elif msg.kind == self.RESP:
            m = self.initiator
            self.tail = ctx.reg.tail(self.platoon)
            why = _check_rear(ctx.view, m, self.tail)
            if why is not None:  # moved since the head decided
                self.abort(ctx, why)
                return
            self.extra_m = max(0.0, ctx.view.gap_m(m, self.tail) - ctx.view.desired_gap_m(m))
            self._goto(self.State.APPROACH, ctx)
            self._event(ctx, f"{self.KIND}_accept", m, platoon=self.platoon, **self._fields())
            _approach_target(ctx, m, self.tail, self.extra_m, 0.0)
        else:  # the head confirmed the coupling
            _clear_vehicle(ctx.reg, self.initiator)
            self._couple(ctx)
            self.complete(ctx)

    def _tick(self, ctx: _Ctx, dt_s: float) -> None:
        if self.state not in (self.State.APPROACH, self.State.COUPLE):
            return
        m, par = self.initiator, ctx.params
        if not _same_path(ctx.view, m, self.tail):
            self.abort(ctx, "lane_mismatch")
            return
        if self._in_state_s(ctx) == 0.0:  # accepted during this tick's deliveries
            dt_s = 0.0
        self.extra_m, err = _approach_target(ctx, m, self.tail, self.extra_m, dt_s)
        if self.state is self.State.COUPLE:
            return
        if self._in_state_s(ctx) > par.approach_timeout_s:
            self.abort(ctx, "approach_timeout")
            return
        if self.extra_m == 0.0 and abs(err) <= par.couple_tolerance_m:
            if self.in_position_since_s is None:
                self.in_position_since_s = ctx.t_s
            if ctx.t_s - self.in_position_since_s >= par.couple_hold_s - 1e-9:
                self._goto(self.State.COUPLE, ctx)
                head = ctx.reg.head(self.platoon)
                self.request(ctx, self.COUPLED, self.CONFIRM, m, head)
        else:
            self.in_position_since_s = None

    def _undo(self, ctx: _Ctx) -> None:
        _clear_vehicle(ctx.reg, self.initiator)


class _Join(_RearApproach):
    """Join at the rear: see the module docstring."""

    KIND = "join"
    State = JoinState
    TRANSITIONS: ClassVar[dict[Any, frozenset[Any]]] = {
        None: frozenset({JoinState.REQUEST}),
        JoinState.REQUEST: frozenset({JoinState.APPROACH}),
        JoinState.APPROACH: frozenset({JoinState.COUPLE}),
        JoinState.COUPLE: frozenset({JoinState.DONE}),
    }
    ANSWERS: ClassVar[dict[MsgKind, MsgKind]] = {
        MsgKind.JOIN_REQUEST: MsgKind.JOIN_RESPONSE,
        MsgKind.JOIN_COUPLED: MsgKind.JOIN_CONFIRM,
    }

    def _begin(self, ctx: _Ctx) -> None:
        self._goto(JoinState.REQUEST, ctx)
        self._event(ctx, "join_request", self.initiator, platoon=self.platoon)
        if not ctx.reg.exists(self.platoon):
            self.abort(ctx, "no_platoon")
            return
        self._send_request(ctx)

    def _refusal(self, ctx: _Ctx) -> str | None:
        reg = ctx.reg
        if reg.platoon_of[self.initiator] >= 0:
            return "incompatible"
        if reg.followers(self.platoon) >= reg.max_followers:
            return "platoon_full"
        return None

    def _couple(self, ctx: _Ctx) -> None:
        ctx.reg._append(self.platoon, [self.initiator])


class _Merge(_RearApproach):
    """Merge a rear platoon onto a front one: see the module docstring."""

    KIND = "merge"
    State = MergeState
    REQ = MsgKind.MERGE_REQUEST
    RESP = MsgKind.MERGE_RESPONSE
    COUPLED = MsgKind.MERGE_COUPLED
    CONFIRM = MsgKind.MERGE_CONFIRM
    TRANSITIONS: ClassVar[dict[Any, frozenset[Any]]] = {
        None: frozenset({MergeState.REQUEST}),
        MergeState.REQUEST: frozenset({MergeState.APPROACH}),
        MergeState.APPROACH: frozenset({MergeState.COUPLE}),
        MergeState.COUPLE: frozenset({MergeState.DONE}),
    }
    ANSWERS: ClassVar[dict[MsgKind, MsgKind]] = {
        MsgKind.MERGE_REQUEST: MsgKind.MERGE_RESPONSE,
        MsgKind.MERGE_COUPLED: MsgKind.MERGE_CONFIRM,
    }

    def __init__(self, mid: int, rear_head: int, front: int, rear: int) -> None:
        super().__init__(mid, rear_head, front)
        self.rear = rear

    def _fields(self) -> dict[str, Any]:
        return {"rear_platoon": self.rear}

    def _begin(self, ctx: _Ctx) -> None:
        reg = ctx.reg
        self._goto(MergeState.REQUEST, ctx)
        self._event(
            ctx, "merge_request", self.initiator, platoon=self.platoon, rear_platoon=self.rear
        )
        if not (reg.exists(self.platoon) and reg.exists(self.rear)):
            self.abort(ctx, "no_platoon")
            return
        if not self.lock(ctx, self.rear):  # the rear head holds its own platoon first
            self.abort(ctx, "leader_busy")
            return
        self._send_request(ctx)

    def _refusal(self, ctx: _Ctx) -> str | None:
        reg = ctx.reg
        if not reg.exists(self.rear) or reg.head(self.rear) != self.initiator:
            return "incompatible"
        if reg.followers(self.platoon) + reg.size(self.rear) > reg.max_followers:
            return "platoon_full"
        return None

    def _couple(self, ctx: _Ctx) -> None:
        ctx.reg._merge(self.platoon, self.rear)


class LeaveState(Enum):
    """States of a leave."""

    REQUEST = "request"
    OPEN = "open"
    EXIT = "exit"
    CLOSE = "close"
    DONE = "done"
    ABORTED = "aborted"


class _Leave(_Manoeuvre):
    """Leave from any position: see the module docstring."""

    KIND = "leave"
    State = LeaveState
    TRANSITIONS: ClassVar[dict[Any, frozenset[Any]]] = {
        None: frozenset({LeaveState.REQUEST}),
        LeaveState.REQUEST: frozenset({LeaveState.OPEN, LeaveState.EXIT}),
        LeaveState.OPEN: frozenset({LeaveState.EXIT}),
        LeaveState.EXIT: frozenset({LeaveState.CLOSE, LeaveState.DONE}),
        LeaveState.CLOSE: frozenset({LeaveState.DONE}),
    }
    ANSWERS: ClassVar[dict[MsgKind, MsgKind]] = {
        MsgKind.LEAVE_REQUEST: MsgKind.LEAVE_RESPONSE,
        MsgKind.GAP_OPEN: MsgKind.GAP_ACK,
    }

    def __init__(self, mid: int, leaver: int, platoon: int) -> None:
        super().__init__(mid, leaver, platoon)
        self.ahead = -1  # predecessor of the leaver (-1 for the head)
        self.behind = -1  # follower of the leaver (-1 for the tail)
        self.extra_m = 0.0

    def _begin(self, ctx: _Ctx) -> None:
        self._goto(LeaveState.REQUEST, ctx)
        self._event(ctx, "leave_request", self.initiator, platoon=self.platoon)
        if ctx.reg.platoon_of[self.initiator] != self.platoon:
            self.abort(ctx, "incompatible")
            return
        head = ctx.reg.head(self.platoon)
        if head == self.initiator:  # the head asks itself: decide at once, nothing to send
            decision = self._decide(ctx)
            if decision[0]:
                self._accepted(ctx)
            else:
                self.abort(ctx, decision[1] or "refused")
            return
        self.request(ctx, MsgKind.LEAVE_REQUEST, MsgKind.LEAVE_RESPONSE, self.initiator, head)

    def _decide(self, ctx: _Ctx) -> tuple[bool, str | None]:
        reg, v = ctx.reg, self.initiator
        if reg.platoon_of[v] != self.platoon:
            return False, "incompatible"
        mem = reg.members(self.platoon)
        if mem[0] == v and len(mem) > 1 and not reg.human_driven[mem[1]]:
            return False, "new_head_driverless"
        if not self.lock(ctx, self.platoon):
            return False, "leader_busy"
        return True, None

    def _answer(self, msg: Message, ctx: _Ctx) -> tuple[bool, str | None] | None:
        if msg.kind == MsgKind.GAP_OPEN:
            ctx.reg.extra_gap_m[msg.receiver] = ctx.params.leave_gap_m
            return True, None
        if not ctx.reg.exists(self.platoon) or ctx.reg.head(self.platoon) != msg.receiver:
            return None
        return self._decide(ctx)

    def _accepted(self, ctx: _Ctx) -> None:
        mem = ctx.reg.members(self.platoon)
        k = mem.index(self.initiator)
        self.ahead = mem[k - 1] if k > 0 else -1
        self.behind = mem[k + 1] if k + 1 < len(mem) else -1
        self._event(ctx, "leave_accept", self.initiator, platoon=self.platoon)
        if self.behind >= 0 and self.ahead >= 0:
            self._goto(LeaveState.OPEN, ctx)
            head = mem[0]
            self.request(ctx, MsgKind.GAP_OPEN, MsgKind.GAP_ACK, head, self.behind)
        else:
            self._start_exit(ctx)

    def _start_exit(self, ctx: _Ctx) -> None:
        self._goto(LeaveState.EXIT, ctx)
        ctx.reg.lane_change_out[self.initiator] = True

    def _on_reply(self, msg: Message, ctx: _Ctx) -> None:
        if not msg.accepted:
            self.abort(ctx, msg.reason or "refused")
        elif msg.kind == MsgKind.LEAVE_RESPONSE:
            self._accepted(ctx)
        # GAP_ACK: the follower is opening; the OPEN tick watches the gap itself

    def _tick(self, ctx: _Ctx, dt_s: float) -> None:
        reg, view, par, v = ctx.reg, ctx.view, ctx.params, self.initiator
        if self.state is LeaveState.OPEN:
            if self._in_state_s(ctx) > par.open_gap_timeout_s:
                self.abort(ctx, "open_gap_timeout")
            elif not self.waiting and view.gap_m(self.behind, v) >= (
                view.desired_gap_m(self.behind) + par.leave_gap_m - par.couple_tolerance_m
            ):
                self._start_exit(ctx)
        elif self.state is LeaveState.EXIT:
            if self.behind < 0 and self.ahead >= 0:  # a tail may drop back instead
                reg.speed_cap_mps[v] = max(
                    0.0, view.speed_mps(self.ahead) - par.leave_drop_back_mps
                )
            if self._left(ctx):
                self._relink(ctx)
            elif self._in_state_s(ctx) > par.exit_timeout_s:
                self.abort(ctx, "exit_timeout")
        elif self.state is LeaveState.CLOSE:
            self.extra_m = max(0.0, self.extra_m - par.gap_close_rate_mps * dt_s)
            reg.extra_gap_m[self.behind] = self.extra_m
            if self.extra_m == 0.0:
                self.complete(ctx)

    def _left(self, ctx: _Ctx) -> bool:
        view, v = ctx.view, self.initiator
        ref = self.ahead if self.ahead >= 0 else self.behind
        if ref < 0 or view.lane(v) != view.lane(ref):
            return True
        if self.behind >= 0:
            return not math.isfinite(view.gap_m(self.behind, v))
        return view.gap_m(v, self.ahead) >= ctx.params.leave_clear_gap_m

    def _relink(self, ctx: _Ctx) -> None:
        reg, v = ctx.reg, self.initiator
        _clear_vehicle(reg, v)
        reg._remove(v)
        if self.behind >= 0 and self.ahead >= 0:
            # the follower now measures the gap to the truck ahead: ramp its excess down
            gap = ctx.view.gap_m(self.behind, self.ahead)
            self.extra_m = max(0.0, gap - ctx.view.desired_gap_m(self.behind))
            reg.extra_gap_m[self.behind] = self.extra_m
            self._goto(LeaveState.CLOSE, ctx)
        else:
            self.complete(ctx)

    def _undo(self, ctx: _Ctx) -> None:
        _clear_vehicle(ctx.reg, self.initiator)
        if self.behind >= 0:
            ctx.reg.extra_gap_m[self.behind] = 0.0


class SplitState(Enum):
    """States of a split."""

    COMMAND = "command"
    DONE = "done"
    ABORTED = "aborted"


class _Split(_Manoeuvre):
    """Split at a member index: see the module docstring."""

    KIND = "split"
    State = SplitState
    TRANSITIONS: ClassVar[dict[Any, frozenset[Any]]] = {
        None: frozenset({SplitState.COMMAND}),
        SplitState.COMMAND: frozenset({SplitState.DONE}),
    }
    ANSWERS: ClassVar[dict[MsgKind, MsgKind]] = {MsgKind.SPLIT_COMMAND: MsgKind.SPLIT_ACK}

    def __init__(self, mid: int, head: int, platoon: int, at_index: int) -> None:
        super().__init__(mid, head, platoon)
        self.at_index = at_index
        self.new_head = -1
        self.new_platoon = -1

    def _fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {"at_index": self.at_index}
        if self.new_platoon >= 0:
            out["new_platoon"] = self.new_platoon
        return out

    def _begin(self, ctx: _Ctx) -> None:
        reg = ctx.reg
        self._goto(SplitState.COMMAND, ctx)
        self._event(
            ctx, "split_request", self.initiator, platoon=self.platoon, at_index=self.at_index
        )
        if not reg.exists(self.platoon):
            self.abort(ctx, "no_platoon")
            return
        mem = reg.members(self.platoon)
        if not 1 <= self.at_index < len(mem):
            self.abort(ctx, "bad_index")
            return
        self.new_head = mem[self.at_index]
        if not reg.human_driven[self.new_head]:
            self.abort(ctx, "new_head_driverless")
            return
        if not self.lock(ctx, self.platoon):
            self.abort(ctx, "leader_busy")
            return
        self.request(ctx, MsgKind.SPLIT_COMMAND, MsgKind.SPLIT_ACK, self.initiator, self.new_head)

    def _answer(self, msg: Message, ctx: _Ctx) -> tuple[bool, str | None] | None:
        return (True, None) if msg.receiver == self.new_head else None

    def _on_reply(self, msg: Message, ctx: _Ctx) -> None:
        self._event(
            ctx, "split_accept", self.initiator, platoon=self.platoon, at_index=self.at_index
        )
        self.new_platoon = ctx.reg._split(self.platoon, self.at_index)
        self.complete(ctx)


# ---------------------------------------------------------------------------------------------
# Manager
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ManoeuvreStatus:
    """Where a manoeuvre stands: ``kind`` (join, leave, split, merge), ``state`` (its state
    machine's state name, lower case), ``finished``, and ``reason`` if it aborted."""

    kind: str
    state: str
    finished: bool
    reason: str | None


class ManoeuvreManager:
    """Runs every active manoeuvre, one control tick per ``step`` call.

    Args:
        registry: the platoon registry the manoeuvres read and change.
        params: timers and gaps (``ManoeuvreParams``).
    """

    def __init__(self, registry: PlatoonRegistry, params: ManoeuvreParams | None = None) -> None:
        self.registry = registry
        self.params = params if params is not None else ManoeuvreParams()
        self._active: dict[int, _Manoeuvre] = {}
        self._finished: dict[int, _Manoeuvre] = {}
        self._locks: dict[int, int] = {}  # platoon -> manoeuvre holding it
        self._busy: dict[int, int] = {}  # vehicle -> manoeuvre it initiated
        self._queue: list[tuple[int, int, Message]] = []  # (delivery step, seq, message)
        self._seq = 0
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        self.messages_sent = 0
        self.messages_lost = 0

    # ---- requests ----

    def request_join(self, vehicle: int, platoon: int) -> int:
        """Ask for ``vehicle`` (solo) to join ``platoon`` at the rear; returns the manoeuvre id.
        The request goes out at the next ``step``."""
        v = self._free_vehicle(vehicle)
        if self.registry.platoon_of[v] >= 0:
            raise ManoeuvreError(
                f"vehicle: {v} is in platoon {int(self.registry.platoon_of[v])}; "
                "only a solo truck can join (leave first)"
            )
        self.registry._get(platoon)
        return self._add(_Join(self._new_id(), v, int(platoon)))

    def request_leave(self, vehicle: int) -> int:
        """Ask for ``vehicle`` to leave its platoon; returns the manoeuvre id."""
        v = self._free_vehicle(vehicle)
        p = int(self.registry.platoon_of[v])
        if p < 0:
            raise ManoeuvreError(f"vehicle: {v} is in no platoon; only a member can leave")
        if self.registry.size(p) == 1:
            raise ManoeuvreError(
                f"vehicle: {v} is alone in platoon {p}; use PlatoonRegistry.dissolve"
            )
        return self._add(_Leave(self._new_id(), v, p))

    def request_split(self, platoon: int, at_index: int) -> int:
        """Ask ``platoon``'s head to split it before member ``at_index`` (1..size-1), which
        heads the rear part; returns the manoeuvre id."""
        size = self.registry.size(platoon)
        if isinstance(at_index, bool) or not isinstance(at_index, int) or not 1 <= at_index < size:
            allowed = f"allowed 1..{size - 1}" if size > 1 else "a platoon of one cannot split"
            raise ManoeuvreError(
                f"at_index: {at_index!r}; platoon {platoon} has {size} members, {allowed}"
            )
        head = self._free_vehicle(self.registry.head(platoon))
        return self._add(_Split(self._new_id(), head, int(platoon), at_index))

    def request_merge(self, front_platoon: int, rear_platoon: int) -> int:
        """Ask for ``rear_platoon`` to close up behind ``front_platoon`` and join it; returns
        the manoeuvre id."""
        if front_platoon == rear_platoon:
            raise ManoeuvreError(
                f"rear_platoon: {rear_platoon} is the front platoon; give two different platoons"
            )
        self.registry._get(front_platoon)
        rear_head = self._free_vehicle(self.registry.head(rear_platoon))
        return self._add(_Merge(self._new_id(), rear_head, int(front_platoon), int(rear_platoon)))

    def cancel(self, vehicle: int, reason: str = "cancelled") -> bool:
        """Abort the manoeuvre ``vehicle`` initiated (e.g. it left its ODD or collided); True
        if there was one.  A leave that has already relinked finishes instead (its gap stops
        ramping).  Events appear in the next ``step``'s result."""
        mid = self._busy.get(int(vehicle))
        if mid is None:
            return False
        m = self._active[mid]
        t_s = m.last_t_s if m.last_t_s is not None else 0.0
        ctx = _Ctx(self, t_s, 0, _NO_VIEW, V2VLink.perfect(1.0))
        if isinstance(m, _Leave) and m.state is LeaveState.CLOSE:
            ctx.reg.extra_gap_m[m.behind] = 0.0
            m.complete(ctx)
        elif m.state is None:
            m.state = m.State.ABORTED
            m.reason = reason
            self._emit(
                t_s, f"{m.KIND}_abort", m.initiator, {"platoon": m.platoon, "reason": reason}
            )
        else:
            m.abort(ctx, reason)
        self._retire(m)
        return True

    # ---- running ----

    def active(self) -> int:
        """Manoeuvres not yet finished; while > 0 the engine must call ``step`` every tick."""
        return len(self._active)

    def status(self, manoeuvre: int) -> ManoeuvreStatus:
        """Where manoeuvre ``manoeuvre`` stands."""
        m = self._active.get(manoeuvre) or self._finished.get(manoeuvre)
        if m is None:
            raise ManoeuvreError(f"manoeuvre: {manoeuvre!r} is unknown")
        state = "idle" if m.state is None else m.state.name.lower()
        return ManoeuvreStatus(m.KIND, state, m.finished, m.reason)

    def step(self, t_s: float, view: VehicleView, link: V2VLink) -> list[dict[str, Any]]:
        """Advance every active manoeuvre by one control tick at time ``t_s``.

        Delivers the messages due at this step (in send order), then ticks each manoeuvre in
        the order they were requested.  Returns this tick's events (see the module docstring).
        """
        step = link.step_index(t_s)
        ctx = _Ctx(self, float(t_s), step, view, link)
        while self._queue and self._queue[0][0] <= step:
            _, _, msg = heapq.heappop(self._queue)
            m = self._active.get(msg.manoeuvre)
            if m is not None:
                m.on_message(msg, ctx)
        for m in list(self._active.values()):
            if not m.finished:
                m.tick(ctx)
        for m in [m for m in self._active.values() if m.finished]:
            self._retire(m)
        out, self._events = self._events, []
        return out

    # ---- internals ----

    def _send(self, msg: Message, ctx: _Ctx) -> None:
        self.messages_sent += 1
        dist = ctx.view.distance_m(msg.sender, msg.receiver)
        if not ctx.link.delivered(msg.sender, msg.receiver, ctx.step, int(msg.kind), dist):
            self.messages_lost += 1
            return
        self._seq += 1
        heapq.heappush(self._queue, (ctx.link.delivery_step(ctx.step), self._seq, msg))

    def _emit(self, t_s: float, type_: str, vehicle: int, fields: dict[str, Any]) -> None:
        ev: dict[str, Any] = {
            "t_s": round(float(t_s), 6),
            "type": type_,
            "vehicle_id": self.registry.vehicle_ids[vehicle],
            "vehicle": int(vehicle),
        }
        ev.update(fields)
        self._events.append(ev)

    def _retire(self, m: _Manoeuvre) -> None:
        self._active.pop(m.id, None)
        self._finished[m.id] = m
        for v in m.vehicles:
            if self._busy.get(v) == m.id:
                del self._busy[v]
        for p in list(self._locks):
            if self._locks[p] == m.id:
                del self._locks[p]
        # drop messages of finished manoeuvres lazily: on_message ignores them

    def _add(self, m: _Manoeuvre) -> int:
        self._active[m.id] = m
        for v in m.vehicles:
            self._busy[v] = m.id
        return m.id

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _free_vehicle(self, vehicle: int) -> int:
        v = self.registry._row(vehicle, "vehicle")
        if v in self._busy:
            raise ManoeuvreError(
                f"vehicle: {v} is already in manoeuvre {self._busy[v]}; wait for it to finish "
                "or cancel it"
            )
        return v


class _NoView:
    """Stand-in view for ``cancel``, which sends nothing and observes nothing."""

    time_s = 0.0

    def gap_m(self, follower: int, leader: int) -> float:
        return math.inf

    def speed_mps(self, v: int) -> float:
        return 0.0

    def lane(self, v: int) -> int:
        return 0

    def pos_key(self, v: int) -> float:
        return 0.0

    def distance_m(self, a: int, b: int) -> float:
        return 0.0

    def desired_gap_m(self, follower: int) -> float:
        return 0.0


_NO_VIEW = _NoView()


__all__ = [
    "DEFAULT_MAX_FOLLOWERS",
    "PURPOSE_MANOEUVRE_BURST",
    "PURPOSE_MANOEUVRE_LOSS",
    "JoinState",
    "LeaveState",
    "ManoeuvreError",
    "ManoeuvreManager",
    "ManoeuvreParams",
    "ManoeuvreStatus",
    "MergeState",
    "Message",
    "MsgKind",
    "PlatoonRegistry",
    "SplitState",
    "V2VLink",
    "VehicleView",
]
