"""The V2V channel's loss statistics against their closed forms."""

from __future__ import annotations

import numpy as np
import pytest

from convoy.vehicle.channel import ChannelSpec, beacon_delivered
from convoy.vehicle.rng import PURPOSE_LOSS, uniform

BEACONS = 200_000


def _deliveries(spec: ChannelSpec, seed: int = 3) -> np.ndarray:
    ch = spec.to_vector(0.1)
    bad = np.zeros(1, np.int8)
    return np.array([beacon_delivered(ch, seed, 0, k, 10.0, False, bad) for k in range(BEACONS)])


def test_bernoulli_loss_rate() -> None:
    got = 1.0 - _deliveries(ChannelSpec(loss=0.2)).mean()
    # binomial standard error at n = 2e5 is ~0.0009; allow 4 sigma
    assert got == pytest.approx(0.2, abs=0.004)


def test_gilbert_elliott_mean_loss_and_burst_length() -> None:
    """pi_bad = p/(p+r) = 0.25; mean burst = 1/r = 5 beacons (Gilbert 1960)."""
    spec = ChannelSpec(loss=0.0, burst_loss=1.0, p_good_to_bad=1 / 15, p_bad_to_good=0.2)
    assert spec.mean_loss() == pytest.approx(0.25)
    ok = _deliveries(spec)
    assert 1.0 - ok.mean() == pytest.approx(0.25, abs=0.015)
    lost = ~ok
    starts = np.flatnonzero(lost[1:] & ~lost[:-1]) + 1
    ends = np.flatnonzero(~lost[1:] & lost[:-1]) + 1
    runs = ends[ends > starts[0]][: len(starts) - 1] - starts[: len(starts) - 1]
    assert runs.mean() == pytest.approx(5.0, rel=0.06)


def test_bursts_are_burstier_than_bernoulli_at_the_same_mean() -> None:
    """The chance that the next beacon is lost, given this one was, tells them apart."""
    bursty = ~_deliveries(ChannelSpec(burst_loss=1.0, p_good_to_bad=0.05, p_bad_to_good=0.2))
    plain = ~_deliveries(ChannelSpec(loss=bursty.mean()))

    def cond(x: np.ndarray) -> float:
        return float((x[1:] & x[:-1]).sum() / x[:-1].sum())

    assert cond(bursty) > 0.75
    assert cond(plain) == pytest.approx(plain.mean(), abs=0.02)


def test_range_and_outage_block_delivery() -> None:
    ch = ChannelSpec(range_m=300.0).to_vector(0.1)
    bad = np.zeros(1, np.int8)
    assert beacon_delivered(ch, 0, 0, 0, 299.0, False, bad)
    assert not beacon_delivered(ch, 0, 0, 0, 301.0, False, bad)
    assert not beacon_delivered(ch, 0, 0, 0, 10.0, True, bad)


def test_counter_based_draws_depend_only_on_the_key() -> None:
    a = [uniform(5, 7, k, PURPOSE_LOSS) for k in range(1000)]
    b = [uniform(5, 7, k, PURPOSE_LOSS) for k in reversed(range(1000))][::-1]
    assert a == b
    assert uniform(5, 7, 1, PURPOSE_LOSS) != uniform(5, 8, 1, PURPOSE_LOSS)
    u = np.array([uniform(1, i, 0, 2) for i in range(50_000)])
    assert u.min() >= 0.0 and u.max() < 1.0
    assert u.mean() == pytest.approx(0.5, abs=0.005)


def test_rates_and_latencies_become_steps() -> None:
    v = ChannelSpec(rate_hz=10, latency_s=0.02).to_vector(0.05)
    assert v[0] == 2 and v[1] == 0
    v = ChannelSpec(rate_hz=20, latency_s=0.1).to_vector(0.05)
    assert v[0] == 1 and v[1] == 2
