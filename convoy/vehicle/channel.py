"""V2V channel: periodic beacons with latency, range, and Bernoulli or Gilbert–Elliott loss.

Each follower listens to its predecessor (and, for leader-referenced laws such as PATH,
to its platoon head).  A beacon is the sender's state at the moment it was sent; it is
delivered ``latency_s`` later unless it is lost, out of range, or inside an outage.
The receiver keeps only the newest delivered beacon, so a controller acts on what it
received and stale data has consequences.

Loss models:

* Bernoulli: each beacon is lost independently with probability ``loss``.
* Gilbert–Elliott (Gilbert 1960; Elliott 1963): a two-state Markov chain per link,
  stepped once per beacon.  In the good state a beacon is lost with ``loss_good``,
  in the bad state with ``loss_bad``.  The mean loss is
  ``pi_bad * loss_bad + (1 - pi_bad) * loss_good`` with
  ``pi_bad = p_good_to_bad / (p_good_to_bad + p_bad_to_good)``, and the mean burst
  length is ``1 / p_bad_to_good`` beacons.

Targets for platooning, 3GPP TS 22.186 Table 5.2.2-1: 10–25 ms latency, 90–99.99 %
reliability, 30 messages/s.  BSM rate 10 Hz per T/CSAE 53; platoon control messages at
>= 20 Hz per T/ITS 0118-2020.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from convoy.vehicle.rng import PURPOSE_BURST, PURPOSE_LOSS, uniform

# Layout of the float64 channel vector handed to the kernel.
CH_PERIOD_STEPS = 0
CH_LATENCY_STEPS = 1
CH_RANGE_M = 2
CH_LOSS_GOOD = 3
CH_LOSS_BAD = 4
CH_P_GOOD_TO_BAD = 5
CH_P_BAD_TO_GOOD = 6
CH_STALE_AFTER_S = 7
CH_SIZE = 8


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """Parameters of the V2V channel.

    Attributes:
        rate_hz: beacon rate; 10 Hz is the T/CSAE 53 BSM rate.
        latency_s: one-way delivery latency (3GPP TS 22.186: 10–25 ms for platooning).
        range_m: beyond this distance a beacon is not received (C-V2X PC5 ~300 m).
        loss: Bernoulli loss probability (used as the good-state loss when bursty).
        burst_loss: loss probability in the Gilbert–Elliott bad state; ``None`` = no bursts.
        p_good_to_bad: per-beacon probability of entering the bad state.
        p_bad_to_good: per-beacon probability of leaving it (mean burst = 1/p beacons).
        stale_after_s: a predecessor beacon older than this counts as lost contact;
            CACC then falls back to ACC.  Default 0.5 s = 5 missed 10 Hz beacons.
        outages: (start_s, end_s) windows in which every beacon is lost (a cut-off link).
    """

    rate_hz: float = 10.0
    latency_s: float = 0.0
    range_m: float = 300.0
    loss: float = 0.0
    burst_loss: float | None = None
    p_good_to_bad: float = 0.0
    p_bad_to_good: float = 1.0
    stale_after_s: float = 0.5
    outages: tuple[tuple[float, float], ...] = ()

    def mean_loss(self) -> float:
        """Long-run share of beacons lost by the loss model (outages excluded)."""
        if self.burst_loss is None:
            return self.loss
        denom = self.p_good_to_bad + self.p_bad_to_good
        pi_bad = self.p_good_to_bad / denom if denom > 0 else 0.0
        return pi_bad * self.burst_loss + (1.0 - pi_bad) * self.loss

    def to_vector(self, dt_s: float) -> np.ndarray:
        """Pack into the kernel's float64 layout (rates and latencies in steps)."""
        v = np.zeros(CH_SIZE)
        v[CH_PERIOD_STEPS] = max(1, round(1.0 / (self.rate_hz * dt_s)))
        v[CH_LATENCY_STEPS] = max(0, round(self.latency_s / dt_s))
        v[CH_RANGE_M] = self.range_m
        v[CH_LOSS_GOOD] = self.loss
        bursty = self.burst_loss is not None
        v[CH_LOSS_BAD] = self.burst_loss if self.burst_loss is not None else self.loss
        v[CH_P_GOOD_TO_BAD] = self.p_good_to_bad if bursty else 0.0
        v[CH_P_BAD_TO_GOOD] = self.p_bad_to_good if bursty else 1.0
        v[CH_STALE_AFTER_S] = self.stale_after_s
        return v

    def outage_array(self) -> np.ndarray:
        """Outage windows as a (k, 2) float64 array [s]."""
        if not self.outages:
            return np.zeros((0, 2))
        return np.asarray(self.outages, dtype=np.float64).reshape(-1, 2)


@njit(cache=True, inline="always")
def beacon_delivered(
    ch: np.ndarray,
    seed: int,
    link: int,
    send_step: int,
    distance_m: float,
    in_outage: bool,
    bad_state: np.ndarray,
) -> bool:
    """Decide whether the beacon sent at ``send_step`` on ``link`` arrives.

    Steps the link's Gilbert–Elliott state first (once per beacon), then draws the loss
    from the counter-based generator, so the outcome depends only on the key.

    Args:
        ch: channel vector, see ``CH_*``.
        seed: scenario seed.
        link: link id (the receiving truck's row for predecessor links).
        send_step: step at which the sender transmitted.
        distance_m: sender-receiver distance at send time [m].
        in_outage: True if the send time falls in an outage window.
        bad_state: (n_links,) int8 Gilbert–Elliott state, updated in place.

    Returns:
        True if delivered.
    """
    if ch[CH_P_GOOD_TO_BAD] > 0.0:
        u = uniform(seed, link, send_step, PURPOSE_BURST)
        if bad_state[link] == 0:
            if u < ch[CH_P_GOOD_TO_BAD]:
                bad_state[link] = 1
        elif u < ch[CH_P_BAD_TO_GOOD]:
            bad_state[link] = 0
    if in_outage or distance_m > ch[CH_RANGE_M]:
        return False
    p_loss = ch[CH_LOSS_BAD] if bad_state[link] == 1 else ch[CH_LOSS_GOOD]
    if p_loss <= 0.0:
        return True
    return uniform(seed, link, send_step, PURPOSE_LOSS) >= p_loss
