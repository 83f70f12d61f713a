"""Empirical privacy auditing: ε lower bounds from membership guesses.

Two audits:

1. ``epsilon_lower_bound`` — the classic multi-run audit (Jagielski et al. 2020; Nasr et al. 2021):
   from TP of P members and FP of N non-members, Clopper–Pearson two-sided (1 − α) intervals give
   TPR_lo, FPR_hi (and TNR_lo = 1 − FPR_hi, FNR_hi = 1 − TPR_lo), and an (ε, δ)-DP mechanism must
   satisfy TPR ≤ e^ε FPR + δ and TNR ≤ e^ε FNR + δ, so
   ε_LB = max(ln((TPR_lo − δ)/FPR_hi), ln((TNR_lo − δ)/FNR_hi)), clipped at 0.

2. The one-run audit of Steinke, Nasr & Jagielski, "Privacy Auditing with One (1) Training Run",
   NeurIPS 2023 (arXiv:2305.08846). Each of m canaries is included independently with probability
   1/2 (``canary_inclusion``); after one training run the auditor scores the canaries, guesses
   "in" for the top k⁺ scores and "out" for the bottom k⁻, abstains on the rest (r = k⁺ + k⁻
   guesses) and counts the W correct guesses. Their main theorem: if training is ε-DP, W is
   stochastically dominated by Binomial(r, e^ε/(1 + e^ε)), so the p-value of observing v is
   f(v) = P[Binomial(r, e^ε/(1+e^ε)) ≥ v]. For (ε, δ)-DP it is
   f(v) + 2mδ · max_{1≤i≤v} (f(v − i) − f(v))/i  (their Theorem/Algorithm for δ > 0, as in the
   code of their appendix). The certified ε_LB is the largest ε whose p-value is below
   1 − confidence (found by bracketing and bisection, as the paper's code does).

   Choosing (k⁺, k⁻) after looking at the result is a multiple test: ``one_run_audit_scan`` divides
   the significance by the number of candidates tried (Bonferroni union bound, as jax_privacy's
   auditing library does over thresholds) unless ``correction="none"`` is requested, in which case
   the result is the best *uncorrected* bound and must be reported as such.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import special, stats

from jaxcurv._validate import as_float_array, check_float, check_int, check_probability
from jaxcurv.privacy.plan import _root_seed

__all__ = [
    "epsilon_lower_bound",
    "canary_inclusion",
    "one_run_p_value",
    "one_run_epsilon_from_counts",
    "one_run_max_epsilon",
    "OneRunAudit",
    "one_run_epsilon_lower_bound",
    "one_run_audit_scan",
]

_EPS_TOL = 1e-6
_EPS_CAP = 1e3  # ε beyond this is numerically indistinguishable (e^{-ε} underflows)


def _check_delta(delta) -> float:
    return check_probability("delta", delta, open_high=True)


def _cp_interval(successes: int, trials: int, alpha: float) -> tuple[float, float]:
    """Clopper–Pearson two-sided (1 − α) interval for a binomial proportion."""
    lo = 0.0 if successes == 0 else float(stats.beta.ppf(alpha / 2, successes, trials - successes + 1))
    hi = 1.0 if successes == trials else float(stats.beta.isf(alpha / 2, successes + 1, trials - successes))
    return lo, hi


def epsilon_lower_bound(
    true_positives: int,
    false_positives: int,
    num_positives: int,
    num_negatives: int,
    *,
    delta: float = 0.0,
    alpha: float = 0.05,
) -> float:
    """ε lower bound certified with confidence 1 − α by a membership test's TP/FP counts.

    ε_LB = max(ln((TPR_lo − δ)/FPR_hi), ln((TNR_lo − δ)/FNR_hi)) ∨ 0 with Clopper–Pearson two-sided
    (1 − α) intervals; e.g. TP = 900/1000, FP = 10/1000, δ = 0, α = 0.05 → 3.872.
    """
    num_positives = check_int("num_positives", num_positives, minimum=1)
    num_negatives = check_int("num_negatives", num_negatives, minimum=1)
    tp = check_int("true_positives", true_positives, minimum=0)
    fp = check_int("false_positives", false_positives, minimum=0)
    if tp > num_positives:
        raise ValueError(f"true_positives {tp} exceeds num_positives {num_positives}")
    if fp > num_negatives:
        raise ValueError(f"false_positives {fp} exceeds num_negatives {num_negatives}")
    delta = _check_delta(delta)
    alpha = check_probability("alpha", alpha, open_low=True, open_high=True)
    tpr_lo, tpr_hi = _cp_interval(tp, num_positives, alpha)
    fpr_lo, fpr_hi = _cp_interval(fp, num_negatives, alpha)
    tnr_lo, fnr_hi = 1.0 - fpr_hi, 1.0 - tpr_lo
    best = 0.0
    for num, den in ((tpr_lo - delta, fpr_hi), (tnr_lo - delta, fnr_hi)):
        if num > 0.0 and den > 0.0:
            best = max(best, math.log(num) - math.log(den))
    return best


def canary_inclusion(num_canaries: int, *, seed) -> np.ndarray:
    """Bool (m,): canary i is included in training independently with probability 1/2.

    ``seed``: int, ``np.random.SeedSequence`` or ``np.random.Generator`` (host numpy RNG).
    """
    m = check_int("num_canaries", num_canaries, minimum=1)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(_root_seed(seed))
    return rng.random(m) < 0.5


def one_run_p_value(
    num_canaries: int, num_guesses: int, num_correct: int, epsilon: float, *, delta: float = 0.0
) -> float:
    """P-value of ≥ v correct out of r guesses among m canaries under the null "(ε, δ)-DP".

    f(v) = P[Binomial(r, e^ε/(1+e^ε)) ≥ v]; with δ > 0 it is f(v) + 2mδ · max_{1≤i≤v}(f(v−i) − f(v))/i,
    capped at 1 (Steinke, Nasr & Jagielski 2023).
    """
    m = check_int("num_canaries", num_canaries, minimum=1)
    r = check_int("num_guesses", num_guesses, minimum=0)
    v = check_int("num_correct", num_correct, minimum=0)
    if not v <= r <= m:
        raise ValueError(f"need num_correct <= num_guesses <= num_canaries, got {v}, {r}, {m}")
    eps = check_float("epsilon", epsilon, minimum=0.0)
    delta = _check_delta(delta)
    return _p_value(m, r, v, eps, delta)


def _p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    q = float(special.expit(eps))
    beta = float(stats.binom.sf(v - 1, r, q))  # P[Bin(r, q) >= v]
    if delta == 0.0 or v == 0:
        return min(beta, 1.0)
    i = np.arange(1, v + 1)
    # f(v - i) - f(v) = P[v - i <= Bin < v]
    gaps = stats.binom.sf(v - i - 1, r, q) - beta
    alpha = float(np.max(gaps / i))
    return min(beta + alpha * delta * 2.0 * m, 1.0)


def one_run_epsilon_from_counts(
    num_canaries: int,
    num_guesses: int,
    num_correct: int,
    *,
    delta: float = 0.0,
    confidence: float = 0.95,
) -> float:
    """Largest ε such that "(ε, δ)-DP" is rejected at level 1 − ``confidence`` (0 if none is)."""
    m = check_int("num_canaries", num_canaries, minimum=1)
    r = check_int("num_guesses", num_guesses, minimum=0)
    v = check_int("num_correct", num_correct, minimum=0)
    if not v <= r <= m:
        raise ValueError(f"need num_correct <= num_guesses <= num_canaries, got {v}, {r}, {m}")
    delta = _check_delta(delta)
    significance = _check_confidence(confidence)
    return _eps_from_counts(m, r, v, delta, significance)


def _check_confidence(confidence) -> float:
    """The significance level 1 − confidence, for a confidence in (0, 1)."""
    return 1.0 - check_probability("confidence", confidence, open_low=True, open_high=True)


def _eps_from_counts(m: int, r: int, v: int, delta: float, significance: float) -> float:
    if r == 0 or _p_value(m, r, v, 0.0, delta) >= significance:
        return 0.0
    lo, hi = 0.0, 1.0  # invariant: p(lo) < significance <= p(hi)
    while _p_value(m, r, v, hi, delta) < significance:
        lo, hi = hi, 2.0 * hi
        if hi > _EPS_CAP:
            return _EPS_CAP
    while hi - lo > _EPS_TOL:
        mid = 0.5 * (lo + hi)
        if _p_value(m, r, v, mid, delta) < significance:
            lo = mid
        else:
            hi = mid
    return lo


def one_run_max_epsilon(num_guesses: int, *, confidence: float = 0.95) -> float:
    """Largest ε a pure-DP one-run audit can certify with r guesses, all correct: logit((1−c)^{1/r})."""
    r = check_int("num_guesses", num_guesses, minimum=1)
    significance = _check_confidence(confidence)
    return float(special.logit(significance ** (1.0 / r)))


class OneRunAudit(NamedTuple):
    """Result of a one-run audit: the certified ε lower bound and the guess counts behind it.

    ``significance`` is the level the bound was certified at (1 − confidence, divided by the number
    of (k⁺, k⁻) candidates when a Bonferroni correction was applied).
    """

    epsilon: float
    num_guesses_positive: int
    num_guesses_negative: int
    num_correct: int
    num_canaries: int
    significance: float


def _check_scores(scores, included) -> tuple[np.ndarray, np.ndarray]:
    s = as_float_array("scores", scores)
    inc = np.asarray(included)
    if s.ndim != 1 or inc.shape != s.shape:
        raise ValueError(f"scores and included must be 1-D of the same length, got {s.shape}, {inc.shape}")
    if inc.dtype != np.bool_:
        raise ValueError(f"included must be a bool array (canary_inclusion), got dtype {inc.dtype}")
    if s.size == 0:
        raise ValueError("need at least one canary")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite; replace NaN/inf scores (e.g. by the median) first")
    return s, inc


def _correct_counts(order_desc: np.ndarray, inc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prefix counts: correct "in" guesses among the top-k, correct "out" guesses among the bottom-k."""
    top_correct = np.concatenate([[0], np.cumsum(inc[order_desc])])
    bottom_correct = np.concatenate([[0], np.cumsum(~inc[order_desc[::-1]])])
    return top_correct, bottom_correct


def _check_k(k_pos, k_neg, m) -> tuple[int, int]:
    kp = check_int("num_guesses_positive", k_pos, minimum=0)
    kn = check_int("num_guesses_negative", k_neg, minimum=0)
    if kp + kn > m:
        raise ValueError(f"num_guesses_positive + num_guesses_negative = {kp + kn} exceeds {m} canaries")
    if kp + kn == 0:
        raise ValueError("make at least one guess (num_guesses_positive + num_guesses_negative >= 1)")
    return kp, kn


def one_run_epsilon_lower_bound(
    scores,
    included,
    *,
    num_guesses_positive: int,
    num_guesses_negative: int = 0,
    delta: float = 0.0,
    confidence: float = 0.95,
) -> OneRunAudit:
    """One-run audit with a fixed (k⁺, k⁻): guess "in" for the k⁺ highest scores, "out" for the k⁻ lowest.

    ``scores``: (m,) higher = more likely included; ``included``: bool (m,) from ``canary_inclusion``.
    Ties are broken by index (stable sort). Valid only if (k⁺, k⁻) was fixed before seeing scores.
    """
    s, inc = _check_scores(scores, included)
    kp, kn = _check_k(num_guesses_positive, num_guesses_negative, s.size)
    delta = _check_delta(delta)
    significance = _check_confidence(confidence)
    order = np.argsort(-s, kind="stable")
    top, bottom = _correct_counts(order, inc)
    v = int(top[kp] + bottom[kn])
    eps = _eps_from_counts(s.size, kp + kn, v, delta, significance)
    return OneRunAudit(eps, kp, kn, v, int(s.size), significance)


def _default_candidates(m: int) -> list[tuple[int, int]]:
    sizes = sorted({max(1, int(round(m * f))) for f in (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)})
    cands = [(k, 0) for k in sizes if k <= m]
    cands += [(k, k) for k in sizes if 2 * k <= m]
    return cands


def one_run_audit_scan(
    scores,
    included,
    *,
    candidates: Sequence[tuple[int, int]] | None = None,
    delta: float = 0.0,
    confidence: float = 0.95,
    correction: str = "bonferroni",
) -> OneRunAudit:
    """Best one-run bound over candidate (k⁺, k⁻) pairs.

    With ``correction="bonferroni"`` (default) each candidate is tested at (1 − confidence)/K for K
    candidates, so the maximum is a valid bound at ``confidence`` (union bound). ``"none"`` returns the
    uncorrected maximum (what is often plotted; not a certified bound). Default candidates:
    k ∈ round(m · {1, 2, 5, 10, 20, 30, 50}%) as (k, 0) and (k, k).
    """
    s, inc = _check_scores(scores, included)
    m = s.size
    cands = _default_candidates(m) if candidates is None else [tuple(c) for c in candidates]
    if not cands:
        raise ValueError("candidates is empty; give at least one (k_plus, k_minus) pair")
    cands = [_check_k(kp, kn, m) for kp, kn in cands]
    delta = _check_delta(delta)
    significance = _check_confidence(confidence)
    if correction == "bonferroni":
        significance /= len(cands)
    elif correction != "none":
        raise ValueError(f"correction must be 'bonferroni' or 'none', got {correction!r}")
    order = np.argsort(-s, kind="stable")
    top, bottom = _correct_counts(order, inc)
    best = None
    for kp, kn in cands:
        v = int(top[kp] + bottom[kn])
        eps = _eps_from_counts(m, kp + kn, v, delta, significance)
        if best is None or eps > best.epsilon:
            best = OneRunAudit(eps, kp, kn, v, m, significance)
    return best
