"""Customer lifetime value: BG/NBD + Gamma-Gamma (numpy/scipy) and a heuristic.

BG/NBD (Fader, Hardie & Lee 2005) models *whether and how often* a customer buys:
while alive, purchases follow a Poisson process with rate ``lambda ~ Gamma(r,
alpha)``; after each purchase the customer drops out with probability ``p ~
Beta(a, b)``. Gamma-Gamma models *how much*: transaction values ``~ Gamma(p,
nu)`` with ``nu ~ Gamma(q, gamma)``, independent of the purchase process.
Both are fitted by maximum likelihood (``scipy.optimize.minimize`` on log
parameters). Time is measured in weeks.

CLV = sum over the next ``horizon`` months of expected purchases per quarter x
expected order value x margin rate, discounted monthly at the annual discount
rate from the quarter's end (net present value of expected future contributions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize, special

from crm_store.errors import InvalidInput

WEEKS_PER_MONTH = 52.1775 / 12


@dataclass(frozen=True)
class BgNbdParams:
    """Fitted BG/NBD parameters (time unit: weeks)."""

    r: float
    alpha: float
    a: float
    b: float


@dataclass(frozen=True)
class GammaGammaParams:
    """Fitted Gamma-Gamma spend parameters."""

    p: float
    q: float
    gamma: float


def _check(x: np.ndarray, t_x: np.ndarray, t: np.ndarray) -> None:
    if len(x) == 0:
        raise InvalidInput("cannot fit BG/NBD without customers")
    if (x < 0).any() or (t_x < 0).any() or (t_x > t + 1e-9).any():
        raise InvalidInput("BG/NBD inputs need x >= 0 and 0 <= t_x <= T")


def bgnbd_log_likelihood(
    params: BgNbdParams, x: np.ndarray, t_x: np.ndarray, t: np.ndarray
) -> np.ndarray:
    """Per-customer log-likelihood of (repeat purchases x, last t_x, age T)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    common = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
    beta_ab = special.betaln(a, b)
    a1 = common + special.betaln(a, b + x) - beta_ab - (r + x) * np.log(alpha + t)
    with np.errstate(divide="ignore", invalid="ignore"):
        a2 = (
            common
            + special.betaln(a + 1, b + np.maximum(x, 1) - 1)
            - beta_ab
            - (r + x) * np.log(alpha + t_x)
        )
    a2 = np.where(x > 0, a2, -np.inf)
    return np.logaddexp(a1, a2)


def _minimize(negll: Any, start: np.ndarray) -> np.ndarray:
    """Minimise over log parameters: L-BFGS-B, Nelder-Mead when it fails."""
    result = optimize.minimize(negll, start, method="L-BFGS-B")
    if not (result.success and np.isfinite(result.fun)):
        result = optimize.minimize(
            negll, start, method="Nelder-Mead", options={"maxiter": 4000}
        )
        result = optimize.minimize(negll, result.x, method="L-BFGS-B")
    if not np.isfinite(result.fun):
        raise InvalidInput("the CLV model did not converge on these data")
    return result.x


def fit_bgnbd(x: np.ndarray, t_x: np.ndarray, t: np.ndarray) -> BgNbdParams:
    """Fit BG/NBD by maximum likelihood.

    Args:
        x: repeat purchases (purchases - 1).
        t_x: weeks from first to last purchase.
        t: weeks from first purchase to the reference time.

    Raises:
        InvalidInput: empty or inconsistent inputs.
    """
    x, t_x, t = (np.asarray(v, dtype="float64") for v in (x, t_x, t))
    _check(x, t_x, t)

    def negll(logp: np.ndarray) -> float:
        p = np.exp(np.clip(logp, -20, 20))
        params = BgNbdParams(*p)
        return -float(np.sum(bgnbd_log_likelihood(params, x, t_x, t))) / len(x)

    start = np.log([1.0, max(float(np.mean(t)), 1.0) / 4, 1.0, 3.0])
    return BgNbdParams(*np.exp(_minimize(negll, start)))


def expected_purchases(
    params: BgNbdParams,
    horizon: float | np.ndarray,
    x: np.ndarray,
    t_x: np.ndarray,
    t: np.ndarray,
) -> np.ndarray:
    """Expected purchases in the next ``horizon`` weeks, given each history."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    x, t_x, t = (np.asarray(v, dtype="float64") for v in (x, t_x, t))
    horizon = np.asarray(horizon, dtype="float64")
    z = horizon / (alpha + t + horizon)
    log_ratio = (r + x) * np.log((alpha + t) / (alpha + t + horizon))
    hyp = special.hyp2f1(r + x, b + x, a + b + x - 1, z)
    numerator = (a + b + x - 1) / (a - 1) * (1 - np.exp(log_ratio) * hyp)
    with np.errstate(divide="ignore", invalid="ignore"):
        odds = np.where(
            x > 0,
            a / (b + x - 1) * np.exp((r + x) * np.log((alpha + t) / (alpha + t_x))),
            0.0,
        )
    result = numerator / (1 + odds)
    return np.nan_to_num(np.maximum(result, 0.0))


def probability_alive(
    params: BgNbdParams, x: np.ndarray, t_x: np.ndarray, t: np.ndarray
) -> np.ndarray:
    """Probability that each customer is still "alive" (will buy again)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    with np.errstate(divide="ignore", invalid="ignore"):
        odds = a / (b + x - 1) * np.exp((r + x) * np.log((alpha + t) / (alpha + t_x)))
    return np.where(x > 0, 1 / (1 + odds), 1.0)


def gamma_gamma_log_likelihood(
    params: GammaGammaParams, n: np.ndarray, mean_value: np.ndarray
) -> np.ndarray:
    """Per-customer log-likelihood of the mean value of ``n`` transactions."""
    p, q, g = params.p, params.q, params.gamma
    px = p * n
    return (
        special.gammaln(px + q)
        - special.gammaln(px)
        - special.gammaln(q)
        + q * np.log(g)
        + px * np.log(n)
        + (px - 1) * np.log(mean_value)
        - (px + q) * np.log(g + mean_value * n)
    )


def fit_gamma_gamma(n: np.ndarray, mean_value: np.ndarray) -> GammaGammaParams:
    """Fit Gamma-Gamma on customers with ``n >= 1`` purchases of mean value > 0.

    Raises:
        InvalidInput: no usable customers.
    """
    n, m = np.asarray(n, dtype="float64"), np.asarray(mean_value, dtype="float64")
    keep = (n >= 1) & (m > 0)
    n, m = n[keep], m[keep]
    if len(n) < 2:
        raise InvalidInput("cannot fit Gamma-Gamma with fewer than 2 buyers")

    def negll(logp: np.ndarray) -> float:
        params = GammaGammaParams(*np.exp(np.clip(logp, -20, 20)))
        return -float(np.sum(gamma_gamma_log_likelihood(params, n, m))) / len(n)

    start = np.log([2.0, 3.0, float(np.mean(m))])
    return GammaGammaParams(*np.exp(_minimize(negll, start)))


def expected_order_value(
    params: GammaGammaParams, n: np.ndarray, mean_value: np.ndarray
) -> np.ndarray:
    """Expected value of a future order (population mean for non-buyers)."""
    p, q, g = params.p, params.q, params.gamma
    n = np.asarray(n, dtype="float64")
    m = np.asarray(mean_value, dtype="float64")
    population = p * g / (q - 1) if q > 1 else float(np.nanmean(m[n > 0]))
    with np.errstate(divide="ignore", invalid="ignore"):
        conditional = (g + m * n) * p / (p * n + q - 1)
    return np.where((n > 0) & (m > 0), conditional, population)


def discounted_clv(
    bg: BgNbdParams,
    gg: GammaGammaParams,
    *,
    x: np.ndarray,
    t_x: np.ndarray,
    t: np.ndarray,
    purchases: np.ndarray,
    mean_value: np.ndarray,
    margin_rate: float,
    annual_discount_rate: float,
    horizon_months: int,
    step_months: int = 3,
) -> np.ndarray:
    """Net present value of expected margin over ``horizon_months``.

    Expected purchases are counted per step of ``step_months`` (default a
    quarter) and discounted from the end of their step, a slightly conservative
    approximation that keeps a refresh of a million customers fast.

    Raises:
        InvalidInput: a negative discount rate or a margin outside (0, 1].
    """
    if annual_discount_rate < 0:
        raise InvalidInput("annual_discount_rate must not be negative")
    if not 0 < margin_rate <= 1:
        raise InvalidInput("margin_rate must be in (0, 1]")
    monthly = (1 + annual_discount_rate) ** (1 / 12) - 1
    value = expected_order_value(gg, purchases, mean_value) * margin_rate
    total = np.zeros(len(x))
    previous = np.zeros(len(x))
    if step_months < 1:
        raise InvalidInput("step_months must be >= 1")
    ends = sorted(
        {*range(step_months, horizon_months + 1, step_months), horizon_months}
    )
    for month in ends:
        cumulative = expected_purchases(bg, month * WEEKS_PER_MONTH, x, t_x, t)
        total += (cumulative - previous) / (1 + monthly) ** month
        previous = cumulative
    return total * value


def heuristic_clv(
    spend_last_year: np.ndarray,
    *,
    margin_rate: float,
    annual_discount_rate: float,
    retention: float,
    horizon_months: int,
) -> np.ndarray:
    """Baseline: last year's margin repeats yearly, kept with ``retention``.

    CLV_h = margin * spend_last_year * sum_{y=1..Y} retention^(y-1) / (1+d)^y,
    with Y = horizon in years (a partial last year counts pro rata).
    """
    if annual_discount_rate < 0:
        raise InvalidInput("annual_discount_rate must not be negative")
    years = horizon_months / 12
    factor = 0.0
    y = 1
    while years > 0:
        share = min(1.0, years)
        factor += share * retention ** (y - 1) / (1 + annual_discount_rate) ** y
        years -= share
        y += 1
    return np.asarray(spend_last_year, dtype="float64") * margin_rate * factor
