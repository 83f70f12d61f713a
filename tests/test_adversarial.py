"""Adversarial distance against the closed form of a linear softmax model."""

import logging

import jax
import numpy as np
import pytest

from jaxcurv.adversarial import AdversarialDistance, adversarial_distance, make_adversarial_distance


def _linear_logits(params, x):
    return x.reshape(-1) @ params["w"] + params["b"]


@pytest.fixture(scope="module")
def linear():
    """A linear model, inputs with some misclassified examples, and the exact L2 distances."""
    rng = np.random.default_rng(8)
    n, c = 40, 5
    params = {"w": rng.normal(size=(16, c)).astype(np.float32),
              "b": rng.normal(size=c).astype(np.float32)}
    x = rng.normal(size=(n, 4, 4, 1)).astype(np.float32)
    y = rng.integers(0, c, n).astype(np.int32)
    w, b = params["w"].astype(np.float64), params["b"].astype(np.float64)
    z = x.reshape(n, -1).astype(np.float64) @ w + b
    exact = np.zeros(n)  # misclassified: 0; else min over classes of margin / ‖w_y − w_c‖
    for i in range(n):
        if z[i].argmax() == y[i]:
            exact[i] = min((z[i, y[i]] - z[i, j]) / np.linalg.norm(w[:, y[i]] - w[:, j])
                           for j in range(c) if j != y[i])
    assert (exact == 0).sum() >= 5 and (exact > 0).sum() >= 5
    return params, x, y, exact


def test_adversarial_distance_linear_closed_form(linear, caplog):
    params, x, y, exact = linear
    search = make_adversarial_distance(_linear_logits, pgd_steps=10, search_steps=12,
                                       batch_size=16)
    res = search(params, x, y, max_norm=10.0)
    assert isinstance(res, AdversarialDistance)
    ok = exact > 0
    ratio = (10.0 / 1e-5) ** (2.0 ** -12)  # the documented bracket: distance / lower
    assert (res.distance[~ok] == 0).all()
    assert (res.lower[ok] > 0).all()
    assert (res.distance[ok] / res.lower[ok] <= ratio * (1 + 1e-5)).all()
    np.testing.assert_array_less(res.lower[ok] * (1 - 1e-5), exact[ok])
    np.testing.assert_array_less(exact[ok], res.distance[ok] * (1 + 1e-5))
    # the one-call convenience runs the same search
    once = adversarial_distance(_linear_logits, params, x, y, max_norm=10.0, pgd_steps=10,
                                search_steps=12, batch_size=16)
    np.testing.assert_array_equal(once.distance, res.distance)
    np.testing.assert_array_equal(once.lower, res.lower)
    # a max_norm below the distance gives +inf with lower = max_norm
    cap = float(np.median(exact[ok]))
    with jax.log_compiles(True), caplog.at_level(logging.WARNING):
        caplog.clear()  # the held function, same shapes, other max_norm: no recompilation
        capped = search(params, x, y, max_norm=cap)
        assert not [r for r in caplog.records if "Compiling" in r.getMessage()]
    far = exact > cap * (1 + 1e-4)
    assert far.sum() >= 3 and np.isinf(capped.distance[far]).all()
    np.testing.assert_allclose(capped.lower[far], cap, rtol=1e-6)  # float32 radius
    near = ok & (exact < cap * (1 - 1e-2))
    np.testing.assert_array_less(exact[near], capped.distance[near] * (1 + 1e-5))


def test_fixed_batch_size_pads_shorter_inputs(linear):
    params, x, y, _ = linear
    search = make_adversarial_distance(_linear_logits, pgd_steps=3, search_steps=4,
                                       batch_size=16)
    full = search(params, x, y, max_norm=10.0)
    part = search(params, x[:5], y[:5], max_norm=10.0)  # 5 rows padded to one chunk of 16
    np.testing.assert_array_equal(part.distance, full.distance[:5])
    np.testing.assert_array_equal(part.lower, full.lower[:5])


def test_adversarial_distance_validation():
    x, y = np.zeros((2, 4, 4, 1), np.float32), np.zeros(2, np.int32)
    params = {"w": np.ones((16, 3), np.float32), "b": np.zeros(3, np.float32)}
    for bad, match in [({"max_norm": -1.0}, "max_norm"), ({"search_steps": -1}, "search_steps"),
                       ({"num_targets": 0}, "num_targets"), ({"max_norm": 1.0, "min_norm": 2.0},
                                                             "min_norm"),
                       ({"pgd_steps": 0}, "pgd_steps"), ({"batch_size": 0}, "batch_size")]:
        with pytest.raises(ValueError, match=match):
            adversarial_distance(_linear_logits, params, x, y, **bad)
    with pytest.raises(ValueError, match="NaN"):
        adversarial_distance(_linear_logits, params, np.full_like(x, np.nan), y)
    with pytest.raises(ValueError, match="y must be"):
        adversarial_distance(_linear_logits, params, x, y[:1])
    with pytest.raises(ValueError, match="no example"):
        adversarial_distance(_linear_logits, params, x[:0], y[:0])
    # the constructor checks its settings before anything runs
    for bad, match in [({"pgd_steps": 0}, "pgd_steps"), ({"search_steps": 1.5}, "search_steps"),
                       ({"num_targets": True}, "num_targets"), ({"batch_size": -2}, "batch_size")]:
        with pytest.raises(ValueError, match=match):
            make_adversarial_distance(_linear_logits, **bad)
