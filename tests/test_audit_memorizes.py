"""The audit's headline quantities: the default configuration fits what it should memorize, and
the `curvature` column is the papers' tr(H²)-based Curv (non-negative), `curvature_trace` tr(H)."""

import dataclasses

import jax
import numpy as np
import pytest

from jaxcurv import data, models
from jaxcurv.curvature import Curvature, input_curvature
from jaxcurv.workflow import AuditConfig
from jaxcurv.workflow.audit import AuditData, AuditRun, load_data, scores_table, train_members


def test_default_configuration_fits_flipped_labels(tmp_path):
    """The default audit (model, width, optimizer, epochs, batch size, no weight decay) on the
    full digits with 10 % flipped labels: members fit ≥ 0.99 of their training labels and ≥ 0.9
    of the flipped ones (4 members instead of 32: the fit is per member)."""
    config = dataclasses.replace(AuditConfig(), models=4, label_noise=0.1, out=str(tmp_path))
    assert (config.model, config.model_settings) == ("mlp", {"hidden": 512, "depth": 2})
    run_data = load_data(config)
    ens = train_members(config, run_data, jax.random.PRNGKey(0), private=False)
    from jaxcurv import ensemble

    logits = ensemble.predict(ens, run_data.train.images)
    correct = logits.argmax(-1) == run_data.train.labels[None]
    masks, flipped = run_data.masks, run_data.flipped
    assert correct[masks].mean() >= 0.99
    assert correct[masks & flipped[None]].mean() >= 0.9
    # ... and they do not fit the flipped labels of examples they never saw: memorization
    assert correct[~masks & flipped[None]].mean() < 0.2


def _fake_run(trace, trace_sq, masks, labels):
    k, n = masks.shape
    train = data.Dataset(np.zeros((n, 2, 2, 1), np.float32), labels, 3, "toy")
    run_data = AuditData(train, train, labels, np.zeros(n, bool), masks, "x")
    logits = np.zeros((k, 1, n, 3))
    curv = Curvature(trace, trace_sq, np.zeros_like(trace), np.zeros_like(trace))
    return AuditRun(AuditConfig(), run_data, None, logits, logits[:, 0], curv, None, {}, {}, None)


def test_curvature_column_is_the_in_member_mean_of_trace_sq():
    """scores.csv `curvature` = mean over IN members of the Hutchinson tr(H²) estimate (≥ 0),
    `curvature_out` over OUT members, `curvature_all` over all, `curvature_trace*` the same for
    the signed tr(H) — by a naive loop."""
    model = models.get_model("mlp", 3, hidden=8, depth=1)
    loss_fn = models.make_loss_fn(model)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(5, 2, 2, 1)).astype(np.float32)
    y = rng.integers(0, 3, 5).astype(np.int32)
    rows = [input_curvature(loss_fn, models.init_variables(model, jax.random.PRNGKey(j),
                                                           x.shape[1:]),
                            x, y, jax.random.PRNGKey(10 + j), num_probes=3) for j in range(4)]
    trace = np.stack([r.trace for r in rows])
    trace_sq = np.stack([r.trace_sq for r in rows])
    assert (trace_sq >= 0).all()
    masks = np.array([[1, 0, 1, 1, 0], [0, 1, 1, 0, 1], [1, 1, 0, 0, 1], [0, 0, 0, 1, 1]], bool)
    cols = scores_table(_fake_run(trace, trace_sq, masks, y))
    for i in range(5):
        ins = [j for j in range(4) if masks[j, i]]
        outs = [j for j in range(4) if not masks[j, i]]
        assert cols["curvature"][i] == pytest.approx(np.mean([trace_sq[j, i] for j in ins]))
        assert cols["curvature_out"][i] == pytest.approx(np.mean([trace_sq[j, i] for j in outs]))
        assert cols["curvature_trace"][i] == pytest.approx(np.mean([trace[j, i] for j in ins]))
        assert cols["curvature_all"][i] == pytest.approx(np.mean(trace_sq[:, i]))
        assert cols["curvature_trace_all"][i] == pytest.approx(np.mean(trace[:, i]))
        assert cols["curvature_trace_out"][i] == pytest.approx(
            np.mean([trace[j, i] for j in outs]))
    assert (cols["curvature"] >= 0).all()
    assert "curvature_sq" not in cols
