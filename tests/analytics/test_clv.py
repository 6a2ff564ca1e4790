"""CLV models recover known parameters from simulated data; bad inputs fail."""

from __future__ import annotations

import numpy as np
import pytest

from crm_store.analytics import clv
from crm_store.analytics.config import AnalyticsConfig
from crm_store.errors import InvalidInput

TRUE_BG = clv.BgNbdParams(r=0.8, alpha=12.0, a=0.9, b=3.5)
TRUE_GG = clv.GammaGammaParams(p=6.0, q=4.0, gamma=60.0)


def simulate_bgnbd(params: clv.BgNbdParams, ages: np.ndarray, rng):
    """Repeat purchases x and last purchase time t_x for customers of age T."""
    lam = rng.gamma(params.r, 1 / params.alpha, len(ages))
    drop = rng.beta(params.a, params.b, len(ages))
    x, t_x = np.zeros(len(ages)), np.zeros(len(ages))
    for i, age in enumerate(ages):
        t = 0.0
        while True:
            t += rng.exponential(1 / lam[i])
            if t > age:
                break
            x[i], t_x[i] = x[i] + 1, t
            if rng.random() < drop[i]:
                break
    return x, t_x


@pytest.fixture(scope="module")
def simulated():
    rng = np.random.default_rng(20261101)
    ages = rng.uniform(30, 150, 6000)
    x, t_x = simulate_bgnbd(TRUE_BG, ages, rng)
    return x, t_x, ages


def test_bgnbd_recovers_the_simulated_parameters(simulated):
    fitted = clv.fit_bgnbd(*simulated)
    for name in ("r", "alpha", "a", "b"):
        assert getattr(fitted, name) == pytest.approx(
            getattr(TRUE_BG, name), rel=0.25
        ), name


def simulate_times(params: clv.BgNbdParams, end: np.ndarray, rng) -> list[list[float]]:
    """Each customer's repeat purchase times (weeks after the first) until ``end``."""
    lam = rng.gamma(params.r, 1 / params.alpha, len(end))
    drop = rng.beta(params.a, params.b, len(end))
    out = []
    for i, stop in enumerate(end):
        t, times = 0.0, []
        while True:
            t += rng.exponential(1 / lam[i])
            if t > stop:
                break
            times.append(t)
            if rng.random() < drop[i]:
                break
        out.append(times)
    return out


def test_bgnbd_predicts_a_holdout_period_in_aggregate():
    rng = np.random.default_rng(5)
    ages = rng.uniform(30, 150, 5000)
    histories = simulate_times(TRUE_BG, ages + 26, rng)
    x = np.array([sum(t <= a for t in h) for h, a in zip(histories, ages, strict=True)])
    t_x = np.array(
        [
            max([t for t in h if t <= a], default=0.0)
            for h, a in zip(histories, ages, strict=True)
        ]
    )
    holdout = sum(sum(t > a for t in h) for h, a in zip(histories, ages, strict=True))
    fitted = clv.fit_bgnbd(x, t_x, ages)
    predicted = clv.expected_purchases(fitted, 26.0, x, t_x, ages).sum()
    assert predicted == pytest.approx(holdout, rel=0.1)


def test_expected_purchases_match_simulation_given_history(simulated):
    x, t_x, ages = simulated
    expected = clv.expected_purchases(TRUE_BG, 52.0, x, t_x, ages)
    # unconditional sanity: expected purchases are non-negative and rise with x
    assert (expected >= 0).all()
    low = clv.expected_purchases(
        TRUE_BG, 52.0, np.array([1.0]), np.array([50.0]), np.array([60.0])
    )
    high = clv.expected_purchases(
        TRUE_BG, 52.0, np.array([8.0]), np.array([50.0]), np.array([60.0])
    )
    assert high[0] > low[0]


def test_gamma_gamma_recovers_the_simulated_parameters():
    rng = np.random.default_rng(11)
    n_customers = 5000
    nu = rng.gamma(TRUE_GG.q, 1 / TRUE_GG.gamma, n_customers)
    counts = rng.integers(1, 10, n_customers)
    means = np.array(
        [rng.gamma(TRUE_GG.p, 1 / nu[i], counts[i]).mean() for i in range(n_customers)]
    )
    fitted = clv.fit_gamma_gamma(counts, means)
    for name in ("p", "q", "gamma"):
        assert getattr(fitted, name) == pytest.approx(
            getattr(TRUE_GG, name), rel=0.2
        ), name
    # the population mean order value p * gamma / (q - 1) = 120
    population = clv.expected_order_value(fitted, np.array([0]), np.array([0.0]))
    assert population[0] == pytest.approx(120, rel=0.1)


def test_zero_discount_clv_equals_margin_times_expected_spend():
    x, t_x, t = np.array([3.0]), np.array([40.0]), np.array([50.0])
    n, mean_value = np.array([4.0]), np.array([100.0])
    value = clv.discounted_clv(
        TRUE_BG,
        TRUE_GG,
        x=x,
        t_x=t_x,
        t=t,
        purchases=n,
        mean_value=mean_value,
        margin_rate=0.3,
        annual_discount_rate=0.0,
        horizon_months=12,
    )
    purchases = clv.expected_purchases(TRUE_BG, 12 * clv.WEEKS_PER_MONTH, x, t_x, t)
    order_value = clv.expected_order_value(TRUE_GG, n, mean_value)
    assert value[0] == pytest.approx(0.3 * purchases[0] * order_value[0], rel=1e-9)
    discounted = clv.discounted_clv(
        TRUE_BG,
        TRUE_GG,
        x=x,
        t_x=t_x,
        t=t,
        purchases=n,
        mean_value=mean_value,
        margin_rate=0.3,
        annual_discount_rate=0.2,
        horizon_months=12,
    )
    assert discounted[0] < value[0]


def test_heuristic_clv_hand_computed():
    # 1000 spent last year, 30 % margin, 10 % discount, 60 % retention, 2 years:
    # 300 / 1.1 + 300 * 0.6 / 1.21 = 272.727... + 148.760... = 421.487...
    value = clv.heuristic_clv(
        np.array([1000.0]),
        margin_rate=0.3,
        annual_discount_rate=0.1,
        retention=0.6,
        horizon_months=24,
    )
    assert value[0] == pytest.approx(421.4876, abs=1e-3)


def test_negative_discount_rate_is_rejected():
    with pytest.raises(InvalidInput, match="discount"):
        clv.heuristic_clv(
            np.array([1.0]),
            margin_rate=0.3,
            annual_discount_rate=-0.1,
            retention=0.5,
            horizon_months=12,
        )
    with pytest.raises(InvalidInput, match="discount"):
        clv.discounted_clv(
            TRUE_BG,
            TRUE_GG,
            x=np.zeros(1),
            t_x=np.zeros(1),
            t=np.ones(1),
            purchases=np.ones(1),
            mean_value=np.ones(1),
            margin_rate=0.3,
            annual_discount_rate=-0.05,
            horizon_months=12,
        )
    with pytest.raises(InvalidInput, match="annual_discount_rate"):
        AnalyticsConfig(annual_discount_rate=-0.1)


@pytest.mark.parametrize(
    "changes",
    [
        {"margin_rate": 0},
        {"margin_rate": 1.5},
        {"tier_quantiles": {"platinum": 0.5, "gold": 0.8, "silver": 0.3}},
        {"churn_bands": {"medium": 0.9, "high": 0.5}},
    ],
)
def test_invalid_settings_are_rejected(changes):
    with pytest.raises(InvalidInput, match="analytics config"):
        AnalyticsConfig(**changes)


def test_inconsistent_bgnbd_inputs_are_rejected():
    with pytest.raises(InvalidInput, match="t_x <= T"):
        clv.fit_bgnbd(np.array([1.0]), np.array([10.0]), np.array([5.0]))
    with pytest.raises(InvalidInput, match="without customers"):
        clv.fit_bgnbd(np.array([]), np.array([]), np.array([]))
