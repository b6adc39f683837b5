"""Key performance indicators of a run: haulage, energy, drafting, labour, supervision, safety.

The inputs are small records the rest of the cloud layer fills in once per leg and per
truck — ``TripRecord`` (one truck's leg, loaded or empty), ``SafetyRecord`` (one truck's
worst moments) — plus the remote centre's ``SupervisionStats``.  ``compute_kpis`` turns them
into a ``Kpis`` record; ``Kpis.to_dict`` gives the JSON-ready mapping for ``summary.json``
(units in the key names).

Definitions:

* **tonne-km**: tonnes carried x km, loaded legs only; **truck-km**: all legs.
* **empty-km share**: empty km / truck-km.
* **energy per tonne-km**: all energy, empty legs included, over tonne-km [kWh/t-km].
* **drafting saving by platoon position** (0 = lead): ``1 - E_p / E_solo,p`` where ``E_p``
  is the energy of the legs driven at position p and ``E_solo,p`` what those legs would
  have used at the solo trucks' energy per km *for the same load state* (loaded or
  empty), so a mix of loaded and empty legs compares like with like.  The solo rates come
  from the solo legs of the same run or from a ``SoloReference``; a position whose legs
  need a rate that neither gives is left out.  Routes, grades and speeds are not matched:
  compare runs on the same corridor.
* **drivers needed**: distinct drivers on the legs; **trucks per driver**: distinct trucks
  over that.
* **takeovers per 1,000 km**: takeover requests per 1,000 km driven *driverless* (legs
  without a driver), the usual denominator of disengagement rates.
* **on-time share**: legs with a due time that arrived at or before it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from convoy.cloud.supervision import SupervisionStats

SOLO = "solo"


class KpiInputError(ValueError):
    """A run record that cannot be right; the message names the field and the value."""


def _finite(name: str, value: float, minimum: float | None = 0.0) -> None:
    if not math.isfinite(value) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise KpiInputError(f"{name} = {value!r}: must be a finite number{bound}")


@dataclass(frozen=True, slots=True)
class TripRecord:
    """One leg of one truck, loaded or empty.

    Attributes:
        truck_id: the truck.
        distance_km: distance driven [km].
        energy_kwh: net battery energy used [kWh]; may be negative on a long descent.
        loaded: whether the truck carried freight on this leg.
        tonnes: freight carried [t]; > 0 when loaded, 0 when empty.
        platoon_id: the platoon the truck drove in; None = solo.
        position_in_platoon: 0 for the lead, 1.. for followers; None when solo.
        driver_id: the human driver on board; None = driverless.
        departure_s, arrival_s: times of the leg [s].
        due_s: latest arrival the order allows [s]; None = no window.
    """

    truck_id: str
    distance_km: float
    energy_kwh: float
    loaded: bool
    tonnes: float = 0.0
    platoon_id: str | None = None
    position_in_platoon: int | None = None
    driver_id: str | None = None
    departure_s: float = 0.0
    arrival_s: float = 0.0
    due_s: float | None = None

    def __post_init__(self) -> None:
        who = f"trip of truck {self.truck_id!r}"
        _finite(f"{who}: distance_km", self.distance_km)
        _finite(f"{who}: energy_kwh", self.energy_kwh, minimum=None)
        _finite(f"{who}: tonnes", self.tonnes)
        if self.loaded and self.tonnes <= 0:
            raise KpiInputError(f"{who}: tonnes = {self.tonnes}: a loaded leg must carry > 0 t")
        if not self.loaded and self.tonnes != 0:
            raise KpiInputError(f"{who}: tonnes = {self.tonnes}: an empty leg carries 0 t")
        if (self.platoon_id is None) != (self.position_in_platoon is None):
            raise KpiInputError(
                f"{who}: platoon_id = {self.platoon_id!r}, position_in_platoon = "
                f"{self.position_in_platoon!r}: give both (platoon) or neither (solo)"
            )
        if self.position_in_platoon is not None and self.position_in_platoon < 0:
            raise KpiInputError(
                f"{who}: position_in_platoon = {self.position_in_platoon}: must be >= 0 (0 = lead)"
            )
        _finite(f"{who}: departure_s", self.departure_s, minimum=None)
        _finite(f"{who}: arrival_s", self.arrival_s, minimum=self.departure_s)
        if self.due_s is not None:
            _finite(f"{who}: due_s", self.due_s, minimum=None)

    @property
    def tonne_km(self) -> float:
        return self.tonnes * self.distance_km

    @property
    def position_key(self) -> str:
        """``"solo"`` or the position as a string (``"0"`` = lead)."""
        return SOLO if self.position_in_platoon is None else str(self.position_in_platoon)


@dataclass(frozen=True, slots=True)
class SafetyRecord:
    """One truck's safety figures over a run.

    Attributes:
        truck_id: the truck.
        min_ttc_s: smallest time-to-collision seen [s]; inf if it never closed on anything.
        hard_brakes: decelerations beyond the engine's hard-brake threshold.
        collisions: contacts.
    """

    truck_id: str
    min_ttc_s: float = math.inf
    hard_brakes: int = 0
    collisions: int = 0

    def __post_init__(self) -> None:
        if math.isnan(self.min_ttc_s) or self.min_ttc_s < 0:
            raise KpiInputError(
                f"safety of truck {self.truck_id!r}: min_ttc_s = {self.min_ttc_s!r}: must be "
                ">= 0 (inf if none)"
            )
        for name in ("hard_brakes", "collisions"):
            if getattr(self, name) < 0:
                raise KpiInputError(
                    f"safety of truck {self.truck_id!r}: {name} = {getattr(self, name)}: "
                    "must be >= 0"
                )


@dataclass(frozen=True, slots=True)
class SoloReference:
    """Solo energy per km to measure drafting against, when the run has no solo legs."""

    loaded_kwh_per_km: float | None = None
    empty_kwh_per_km: float | None = None

    def rate(self, loaded: bool) -> float | None:
        return self.loaded_kwh_per_km if loaded else self.empty_kwh_per_km


@dataclass(frozen=True, slots=True)
class Kpis:
    """The KPIs of a run; see the module docstring for definitions.  None = not defined
    for this run (no denominator)."""

    trips: int
    trucks: int
    tonnes_t: float
    tonne_km: float
    truck_km: float
    loaded_km: float
    empty_km: float
    empty_km_share: float | None
    energy_kwh: float
    energy_per_tonne_km_kwh: float | None
    energy_per_km_kwh: float | None
    loaded_energy_per_km_by_position_kwh: dict[str, float]
    drafting_saving_by_position: dict[str, float]
    driverless_km: float
    drivers_needed: int
    trucks_per_driver: float | None
    on_time_share: float | None
    takeovers: int | None
    takeovers_per_1000_km: float | None
    minimal_risk_manoeuvres: int | None
    remote_operators: int | None
    requests_per_operator_hour: float | None
    remote_operator_utilisation: float | None
    min_ttc_s: float  # inf if no truck ever closed on anything
    hard_brakes: int
    collisions: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: infinities and NaN become None."""
        out = asdict(self)
        extra = out.pop("extra")
        return {k: _json_safe(v) for k, v in {**out, **extra}.items()}


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    return v


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def drafting(
    trips: Iterable[TripRecord], solo_reference: SoloReference | None = None
) -> tuple[dict[str, float], dict[str, float]]:
    """Loaded energy per km by position [kWh/km], and the drafting saving by position
    (module docstring), both keyed ``"solo"``/``"0"``/``"1"``...

    Solo rates from the run's own solo legs take precedence over ``solo_reference``."""
    e: dict[tuple[str, bool], float] = defaultdict(float)
    d: dict[tuple[str, bool], float] = defaultdict(float)
    for t in trips:
        e[t.position_key, t.loaded] += t.energy_kwh
        d[t.position_key, t.loaded] += t.distance_km
    ref = solo_reference or SoloReference()
    solo_rate = {}
    for loaded in (True, False):
        own = _ratio(e[SOLO, loaded], d[SOLO, loaded])
        solo_rate[loaded] = own if own is not None else ref.rate(loaded)
    loaded_rate = {p: e[p, True] / d[p, True] for (p, ld) in d if ld and d[p, True] > 0}
    savings = {}
    for p in sorted({p for p, _ in d} - {SOLO}, key=int):
        expected, used = 0.0, 0.0
        for loaded in (True, False):
            if d[p, loaded] == 0:
                continue
            rate = solo_rate[loaded]
            if rate is None:  # no solo rate for this load state: no saving for p
                break
            expected += rate * d[p, loaded]
            used += e[p, loaded]
        else:
            if expected > 0:
                savings[p] = 1.0 - used / expected
    order = sorted(loaded_rate, key=lambda p: -1 if p == SOLO else int(p))
    return {p: loaded_rate[p] for p in order}, savings


def compute_kpis(
    trips: Iterable[TripRecord],
    safety: Iterable[SafetyRecord] = (),
    supervision: SupervisionStats | None = None,
    solo_reference: SoloReference | None = None,
) -> Kpis:
    """The KPIs of a run from its legs, its trucks' safety records and its remote centre's
    load (None: the supervision KPIs are None)."""
    trips = list(trips)
    safety = list(safety)
    loaded = [t for t in trips if t.loaded]
    truck_km = sum(t.distance_km for t in trips)
    loaded_km = sum(t.distance_km for t in loaded)
    tonne_km = sum(t.tonne_km for t in loaded)
    energy_kwh = sum(t.energy_kwh for t in trips)
    driverless_km = sum(t.distance_km for t in trips if t.driver_id is None)
    trucks = {t.truck_id for t in trips}
    drivers = {t.driver_id for t in trips if t.driver_id is not None}
    due = [t for t in trips if t.due_s is not None]
    on_time = sum(t.arrival_s <= t.due_s for t in due if t.due_s is not None)
    by_position, savings = drafting(trips, solo_reference)

    sup = supervision
    return Kpis(
        trips=len(trips),
        trucks=len(trucks),
        tonnes_t=sum(t.tonnes for t in loaded),
        tonne_km=tonne_km,
        truck_km=truck_km,
        loaded_km=loaded_km,
        empty_km=truck_km - loaded_km,
        empty_km_share=_ratio(truck_km - loaded_km, truck_km),
        energy_kwh=energy_kwh,
        energy_per_tonne_km_kwh=_ratio(energy_kwh, tonne_km),
        energy_per_km_kwh=_ratio(energy_kwh, truck_km),
        loaded_energy_per_km_by_position_kwh=by_position,
        drafting_saving_by_position=savings,
        driverless_km=driverless_km,
        drivers_needed=len(drivers),
        trucks_per_driver=_ratio(len(trucks), len(drivers)),
        on_time_share=_ratio(on_time, len(due)),
        takeovers=sup.requests if sup else None,
        takeovers_per_1000_km=_ratio(1000.0 * sup.requests, driverless_km) if sup else None,
        minimal_risk_manoeuvres=sup.mrms if sup else None,
        remote_operators=sup.operators if sup else None,
        requests_per_operator_hour=sup.requests_per_operator_hour if sup else None,
        remote_operator_utilisation=sup.utilisation if sup else None,
        min_ttc_s=min((s.min_ttc_s for s in safety), default=math.inf),
        hard_brakes=sum(s.hard_brakes for s in safety),
        collisions=sum(s.collisions for s in safety),
    )


def with_extra(kpis: Kpis, values: Mapping[str, Any]) -> Kpis:
    """``kpis`` with more summary entries (for example the cost model's), which
    ``to_dict`` adds after its own."""
    clash = set(values) & {f.name for f in fields(kpis)}
    if clash:
        raise KpiInputError(f"extra KPI names {sorted(clash)} clash with built-in ones")
    return replace(kpis, extra={**kpis.extra, **values})
