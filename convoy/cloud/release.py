"""Release timing at a platoon hub: a periodic rule and an optimal threshold rule.

Trucks arrive at a hub (a mine gate, a depot) and wait to leave as a hybrid platoon. Each
released platoon needs one lead driver; every further truck follows driverless. Waiting costs
the trucks' time. When should the hub release?

Model (after Johansson et al., "Truck platoon formation at hubs: an optimal release time rule",
arXiv 2202.09119 / IFAC 2020, who cast release as a monotone stopping problem whose optimum is a
one-step look-ahead rule; the derivation below is ours, for Poisson arrivals and a hybrid-platoon
cost):

- trucks arrive as a Poisson process of rate ``λ`` [1/s];
- a platoon of ``k <= M`` trucks costs ``C_f·k + Δ``: every truck pays the follower cost
  ``C_f`` and the platoon pays the lead premium ``Δ`` (the driver, and the lead's lost drafting);
- every waiting truck costs ``c`` per second.

Hold a forming platoon of ``k`` trucks for a short ``dt``: the waiting costs ``k·c·dt``, and with
probability ``λ·dt`` a truck arrives and joins. A joining truck pays ``C_f`` instead of the
long-run average cost per truck ``g`` it would otherwise bear, so the expected saving is
``λ·dt·(g - C_f)``. **Hold while ``λ·(g - C_f) > k·c``, release otherwise** (and always at
``k = M``). The left side does not depend on ``k`` and the right side grows with it, so once the
rule says release it keeps saying so: the problem is monotone and this one-step look-ahead rule is
optimal (Chow, Robbins & Siegmund, "Great Expectations", 1971, ch. 3), as in Johansson et al.

The rule releases at a size ``m``. With Poisson arrivals the trucks of a platoon of ``m`` wait
``(m-1)m/(2λ)`` in total on average, so the cost per truck is

    J(m) = C_f + Δ/m + c·(m-1)/(2λ),      J(m+1) - J(m) = -Δ/(m(m+1)) + c/(2λ),

which falls while ``m(m+1) < 2λΔ/c``. The optimal size is the least ``m`` with
``m(m+1) >= 2λΔ/c`` (capped at ``M``); at it ``g = J(m)``, and the look-ahead rule above holds
exactly for ``k < m`` (checked in the tests). :func:`optimal_threshold` computes ``m``.

The periodic rule releases everyone waiting every ``T`` seconds (in platoons of at most ``M``).
For the same mean size it pays more: the sizes scatter (Poisson), so more platoons are released
small or split, and a truck waits ``T/2`` on average against ``(m-1)/(2λ)``.

Default costs (``ReleaseCosts.ordos``, all [S] from costs.md): the lead premium is the driver's
cost for one trip, 11,000 CNY/month x 1.3 employer cost / (26 days x 8 h) = 68.75 CNY/h (costs.md
§1) over a 2 h trip = 137.5 CNY; a waiting truck forgoes its revenue, about 1 M CNY per truck a
year (KargoBot, costs.md §4) over 320 days x 20 h = 156.25 CNY/h.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from convoy.cloud.entities import EntityError

HOUR_S = 3_600.0


@dataclass(frozen=True, slots=True)
class ReleaseCosts:
    """Costs of releasing platoons (module docstring).

    Attributes:
        lead_premium_cny: ``Δ``, the extra cost of a platoon's lead truck over a follower [CNY].
        wait_cny_per_truck_h: ``c``, the cost of one truck waiting one hour [CNY/h].
        follower_cny: ``C_f``, the cost of a truck's trip as a follower [CNY]; it does not
            change which rule is better, only the totals.
    """

    lead_premium_cny: float
    wait_cny_per_truck_h: float
    follower_cny: float = 0.0

    def __post_init__(self) -> None:
        for name in ("lead_premium_cny", "wait_cny_per_truck_h"):
            v = getattr(self, name)
            if not (v > 0 and math.isfinite(v)):
                raise EntityError(f"ReleaseCosts.{name} = {v!r}; allowed: a finite number > 0")
        if not (self.follower_cny >= 0 and math.isfinite(self.follower_cny)):
            raise EntityError(
                f"ReleaseCosts.follower_cny = {self.follower_cny!r}; allowed: a finite number >= 0"
            )

    @staticmethod
    def ordos(trip_h: float = 2.0) -> ReleaseCosts:
        """The defaults of the module docstring for a trip of ``trip_h`` hours."""
        driver_cny_per_h = 11_000.0 * 1.3 / (26 * 8)  # costs.md §1, [S]
        truck_cny_per_h = 1_000_000.0 / (320 * 20)  # costs.md §4, [S]
        return ReleaseCosts(driver_cny_per_h * trip_h, truck_cny_per_h)


def cost_per_truck(m: int, rate_per_h: float, costs: ReleaseCosts) -> float:
    """``J(m)``: expected cost per truck [CNY] when every platoon leaves at size ``m``."""
    lam = rate_per_h / HOUR_S
    c = costs.wait_cny_per_truck_h / HOUR_S
    return costs.follower_cny + costs.lead_premium_cny / m + c * (m - 1) / (2 * lam)


def optimal_threshold(rate_per_h: float, costs: ReleaseCosts, max_size: int) -> int:
    """The least ``m`` with ``m(m+1) >= 2λΔ/c``, capped at ``max_size`` (module docstring)."""
    if not rate_per_h > 0:
        raise EntityError(f"rate_per_h = {rate_per_h!r}; allowed: > 0")
    if not isinstance(max_size, int) or max_size < 1:
        raise EntityError(f"max_size = {max_size!r}; allowed: an integer >= 1")
    ratio = 2 * rate_per_h * costs.lead_premium_cny / costs.wait_cny_per_truck_h
    m = 1
    while m < max_size and m * (m + 1) < ratio:
        m += 1
    return m


class ReleasePolicy(Protocol):
    """A hub release rule, replayed by :func:`evaluate_release`."""

    @property
    def name(self) -> str:
        """The rule's name in reports."""
        ...

    def next_release_s(self, now_s: float, waiting_since_s: list[float]) -> float:
        """When to release, given the arrival times of the trucks now waiting (inf: not yet).

        Called after every arrival and release; a returned time before the next arrival is
        taken.
        """
        ...


@dataclass(frozen=True, slots=True)
class PeriodicRelease:
    """Release everyone waiting at ``t = k·period_s`` (k = 1, 2, ...)."""

    period_s: float
    name: str = "periodic"

    def __post_init__(self) -> None:
        if not (self.period_s > 0 and math.isfinite(self.period_s)):
            raise EntityError(f"PeriodicRelease.period_s = {self.period_s!r}; allowed: > 0")

    def next_release_s(self, now_s: float, waiting_since_s: list[float]) -> float:
        """The next multiple of the period at or after ``now_s``, if anyone waits."""
        if not waiting_since_s:
            return math.inf
        return max(1, math.ceil(now_s / self.period_s - 1e-12)) * self.period_s


@dataclass(frozen=True, slots=True)
class ThresholdRelease:
    """The optimal one-step look-ahead rule: hold while ``λ·(g - C_f) > k·c``.

    Attributes:
        rate_per_h: arrival rate the rule is tuned for [1/h].
        costs: the costs.
        max_size: most trucks in one platoon (``1 + N``).
        max_wait_s: optional cap on the first truck's wait (a delivery window); inf for none.
    """

    rate_per_h: float
    costs: ReleaseCosts
    max_size: int
    max_wait_s: float = math.inf
    name: str = "threshold"

    @property
    def threshold(self) -> int:
        """The size ``m`` at which the rule releases."""
        return optimal_threshold(self.rate_per_h, self.costs, self.max_size)

    def hold(self, k: int) -> bool:
        """The look-ahead test itself: expected saving of waiting beats its cost at size ``k``."""
        if k >= self.max_size:
            return False
        lam = self.rate_per_h / HOUR_S
        c = self.costs.wait_cny_per_truck_h / HOUR_S
        g = cost_per_truck(self.threshold, self.rate_per_h, self.costs)
        return lam * (g - self.costs.follower_cny) > k * c

    def next_release_s(self, now_s: float, waiting_since_s: list[float]) -> float:
        """Now if the rule says release, else when the first truck's wait reaches the cap."""
        if not waiting_since_s:
            return math.inf
        if len(waiting_since_s) >= self.threshold:
            return now_s
        return waiting_since_s[0] + self.max_wait_s


@dataclass(frozen=True, slots=True)
class ReleaseStats:
    """How a release rule did on a stream of arrivals.

    Attributes:
        policy: the rule's name.
        n_trucks, n_platoons: trucks released and platoons formed.
        mean_size: trucks per platoon.
        mean_wait_s: mean wait of a truck at the hub [s].
        cost_per_truck_cny: ``(platoons·Δ + waiting·c) / trucks + C_f`` [CNY].
        saving_per_truck_cny: against every truck leaving alone at once (cost ``Δ + C_f``) [CNY].
    """

    policy: str
    n_trucks: int
    n_platoons: int
    mean_size: float
    mean_wait_s: float
    cost_per_truck_cny: float
    saving_per_truck_cny: float


def poisson_arrivals(rate_per_h: float, horizon_s: float, seed: int = 0) -> NDArray[np.float64]:
    """Sorted arrival times [s] of a seeded Poisson process of ``rate_per_h`` on [0, horizon)."""
    if not rate_per_h > 0 or not horizon_s > 0:
        raise EntityError(
            f"poisson_arrivals: rate_per_h = {rate_per_h!r}, horizon_s = {horizon_s!r}; "
            "allowed: both > 0"
        )
    rng = np.random.default_rng(seed)
    n = rng.poisson(rate_per_h * horizon_s / HOUR_S)
    # Given their number, Poisson arrival times are uniform order statistics.
    return np.sort(rng.uniform(0.0, horizon_s, n))


def evaluate_release(
    arrivals_s: NDArray[np.float64] | list[float],
    policy: ReleasePolicy,
    costs: ReleaseCosts,
    max_size: int,
    close_s: float | None = None,
) -> ReleaseStats:
    """Replay a release rule on arrival times and price the result.

    Trucks still waiting after the last arrival leave at the rule's next release or when the
    hub closes (``close_s``), whichever comes first; with no ``close_s``, at the rule's next
    release, or at the last arrival if the rule would wait for ever. A release of more than
    ``max_size`` trucks leaves as several platoons.
    """
    arr = np.sort(np.asarray(arrivals_s, dtype=np.float64))
    if not isinstance(max_size, int) or max_size < 1:
        raise EntityError(f"max_size = {max_size!r}; allowed: an integer >= 1")
    last_s = float(arr[-1]) if arr.size else 0.0
    waiting: list[float] = []
    n_platoons = 0
    wait_total_s = 0.0

    def release(t: float) -> None:
        nonlocal n_platoons, wait_total_s
        n_platoons += math.ceil(len(waiting) / max_size)
        wait_total_s += sum(t - a for a in waiting)
        waiting.clear()

    for a in arr:
        # Releases due before this arrival.
        while waiting and (t_rel := policy.next_release_s(waiting[-1], waiting)) < a:
            release(max(t_rel, waiting[-1]))
        waiting.append(float(a))
        t_rel = policy.next_release_s(float(a), waiting)
        if t_rel <= a:
            release(float(a))
    while waiting:
        t_rel = policy.next_release_s(waiting[-1], waiting)
        if close_s is not None:
            t_rel = min(t_rel, max(close_s, last_s))
        release(t_rel if math.isfinite(t_rel) else last_s)
    n = int(arr.size)
    delta, c = costs.lead_premium_cny, costs.wait_cny_per_truck_h / HOUR_S
    cost = (n_platoons * delta + wait_total_s * c) / n + costs.follower_cny if n else 0.0
    return ReleaseStats(
        policy=policy.name,
        n_trucks=n,
        n_platoons=n_platoons,
        mean_size=n / n_platoons if n_platoons else 0.0,
        mean_wait_s=wait_total_s / n if n else 0.0,
        cost_per_truck_cny=cost,
        saving_per_truck_cny=(delta + costs.follower_cny - cost) if n else 0.0,
    )


def compare_release(
    rate_per_h: float,
    horizon_s: float,
    costs: ReleaseCosts,
    max_size: int,
    period_s: float,
    seed: int = 0,
) -> dict[str, ReleaseStats]:
    """Both rules on the same seeded Poisson stream: ``{"periodic": ..., "threshold": ...}``."""
    arrivals = poisson_arrivals(rate_per_h, horizon_s, seed)
    return {
        "periodic": evaluate_release(
            arrivals, PeriodicRelease(period_s), costs, max_size, horizon_s
        ),
        "threshold": evaluate_release(
            arrivals, ThresholdRelease(rate_per_h, costs, max_size), costs, max_size, horizon_s
        ),
    }
