"""Typed auxiliary inputs of a Batch: checked, moved and cast with the model inputs; metadata
kept apart and never cast; a float64 model with auxiliary inputs evaluates."""

from __future__ import annotations

import pytest
import torch

from approxeq.experiments import evaluate_model, load_batches, save_batches
from approxeq.np import Batch, build_model, model_inputs


def aux_batch(dtype=torch.float32, b=3, nc=5, nt=7, dim_aux=2, gen=None) -> Batch:
    gen = gen or torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=dtype)  # noqa: E731
    return Batch(xc=r(b, nc, 2), yc=r(b, nc, 1), xt=r(b, nt, 2), yt=r(b, nt, 1),
                 aux_c=r(b, nc, dim_aux), aux_t=r(b, nt, dim_aux),
                 meta={"gt_loglik": torch.randn(b, generator=gen, dtype=torch.float64),
                       "time_index": torch.arange(b), "oracle": object()})


def test_to_casts_aux_with_the_inputs_and_leaves_metadata_dtypes():
    batch = aux_batch()
    moved = batch.to(dtype=torch.float64)
    assert moved.aux_c.dtype == moved.aux_t.dtype == moved.xc.dtype == torch.float64
    torch.testing.assert_close(moved.aux_t, batch.aux_t.double())
    assert moved.meta["gt_loglik"].dtype == torch.float64
    assert moved.meta["time_index"].dtype == torch.long
    back = moved.to(torch.device("cpu"), torch.float32)
    assert back.aux_c.dtype == torch.float32 and back.meta["oracle"] is batch.meta["oracle"]
    assert model_inputs(batch).keys() == {"aux_c", "aux_t"}
    assert model_inputs(Batch(batch.xc, batch.yc, batch.xt)) == {}
    assert batch.aux is batch.meta  # the old name reads the metadata


@pytest.mark.parametrize("bad, match", [
    (dict(aux_t=None), "aux_t: expected a tensor"),
    (dict(aux_c=torch.zeros(3, 4, 2)), r"aux_c: expected \[3, 5, dim_aux\]"),
    (dict(aux_t=torch.zeros(3, 7, 3)), "aux_t: expected dim_aux = 2"),
    (dict(aux_c=torch.zeros(3, 5, 2, dtype=torch.float64)), "aux_c: expected dtype"),
    (dict(aux_t=torch.full((3, 7, 2), float("nan"))), "aux_t: contains NaN"),
])
def test_bad_aux_inputs_name_the_argument(bad, match):
    b = aux_batch()
    fields = dict(xc=b.xc, yc=b.yc, xt=b.xt, yt=b.yt, aux_c=b.aux_c, aux_t=b.aux_t)
    with pytest.raises((ValueError, TypeError), match=match):
        Batch(**{**fields, **bad})


def test_float64_model_with_aux_inputs_evaluates():
    # a float32 test set (as task generators make them) against a float64 model
    torch.manual_seed(0)
    model = build_model("te-tnp", 2, 1, width=8, num_layers=1, num_heads=2, dim_aux=2,
                        approximate=True, num_fixed_inputs=2).double().eval()
    batches = [aux_batch(torch.float32, gen=torch.Generator().manual_seed(s)) for s in (1, 2)]
    out = evaluate_model(model, batches, equivariance_elements=2, equivariance_tasks=2)
    assert torch.isfinite(torch.tensor([out["loglik"], out["component_loglik"],
                                        out["delta_equiv"]])).all()
    assert out["n_tasks"] == 6 and out["equivariance"]["equiv_err_max"] >= 0
    # the aux inputs reach the model: dropping them changes the prediction
    b = batches[0].to(dtype=torch.float64)
    with_aux = model(b.xc, b.yc, b.xt, **b.model_inputs()).mean
    zero_aux = model(b.xc, b.yc, b.xt, aux_c=torch.zeros_like(b.aux_c),
                     aux_t=torch.zeros_like(b.aux_t)).mean
    assert not torch.allclose(with_aux, zero_aux)


def test_saved_batches_keep_aux_inputs_and_metadata_apart(tmp_path):
    batch = aux_batch()
    save_batches(tmp_path / "tasks.pt", [batch])
    (back,) = load_batches(tmp_path / "tasks.pt")
    assert torch.equal(back.aux_c, batch.aux_c) and torch.equal(back.aux_t, batch.aux_t)
    assert set(back.meta) == {"gt_loglik", "time_index"}  # only tensors are saved
    # files of the first version kept auxiliary inputs among the extras
    legacy = {"format": "approxeq-batches", "version": 1, "batches": [
        {"xc": batch.xc, "yc": batch.yc, "xt": batch.xt, "yt": batch.yt,
         "aux": {"aux_c": batch.aux_c, "aux_t": batch.aux_t,
                 "gt_loglik": batch.meta["gt_loglik"]}}]}
    torch.save(legacy, tmp_path / "old.pt")
    (old,) = load_batches(tmp_path / "old.pt")
    assert torch.equal(old.aux_t, batch.aux_t) and set(old.meta) == {"gt_loglik"}


@pytest.mark.parametrize("bad, match", [
    (dict(aux_t=None), r"aux_t: model was built with dim_aux = 2, so aux_t \[batch, n, 2\]"),
    (dict(aux_c=torch.zeros(3, 4, 2)), r"aux_c: expected \[3, 5, 2\] to match xc \[3, 5, 2\]"),
    (dict(aux_t=torch.zeros(3, 7, 3)), r"aux_t: expected \[3, 7, 2\] to match xt"),
    (dict(aux_c=torch.zeros(3, 5, 2, dtype=torch.float64)), "aux_c: expected dtype"),
    (dict(aux_t=torch.full((3, 7, 2), float("nan"))), "aux_t: contains NaN"),
])
def test_a_model_checks_aux_inputs_as_a_batch_does(bad, match):
    model = build_model("te-tnp", 2, 1, width=8, num_layers=1, num_heads=2, dim_aux=2)
    b = aux_batch()
    with pytest.raises((ValueError, TypeError), match=match):
        model(b.xc, b.yc, b.xt, **{**b.model_inputs(), **bad})
