"""assert_equivariant with an action on outputs: vector fields are checked as vectors, and a
scalar treatment of a vector field is caught."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal, Normal

from approxeq.groups import E, O, OutputRep
from approxeq.np import build_model
from approxeq.testing import assert_equivariant, assert_not_equivariant, random_task


class VectorSmoother(nn.Module):
    """An E(2)-equivariant vector-field predictor by hand: the RBF-weighted mean of the context
    vectors, an isotropic std from the weights' total (or ``s² I + m mᵀ`` with ``full``)."""

    def __init__(self, full: bool = False, broken: bool = False) -> None:
        super().__init__()
        self.full, self.broken = full, broken

    def forward(self, xc, yc, xt):
        w = torch.exp(-0.5 * ((xt[:, :, None] - xc[:, None]) ** 2).sum(-1))  # [b, nt, nc]
        total = w.sum(-1, keepdim=True)
        mean = (w @ yc) / (total + 1)
        s = 1 / (1 + total)
        if not self.full:
            return Normal(mean, s.expand_as(mean))
        if self.broken:  # a covariance that does not turn with the scene
            cov = torch.diag_embed(s.expand_as(mean) + mean ** 2)
        else:
            outer = mean[..., :, None] * mean[..., None, :]
            cov = s[..., None] * torch.eye(2, dtype=mean.dtype) + outer
        return MultivariateNormal(mean, covariance_matrix=cov)


@pytest.mark.parametrize("group", [O(2), E(2)], ids=repr)
def test_vector_model_passes_as_vector(group, float64):
    task = random_task(dim_x=2, dim_y=2)
    model = VectorSmoother()
    assert_equivariant(model, group, task, output_action="vector")
    assert_equivariant(model, group, task, output_action=OutputRep.parse("vector", 2, 2))
    assert_equivariant(model, group, task, output_action=OutputRep(("vector",)).action(group))


def test_a_vector_field_scaled_per_component_is_caught(float64):
    class Anisotropic(VectorSmoother):
        def forward(self, xc, yc, xt):
            pred = super().forward(xc, yc, xt)
            return Normal(pred.mean * torch.tensor([1.0, 2.0], dtype=xc.dtype), pred.stddev)

    assert_not_equivariant(Anisotropic(), O(2), random_task(dim_x=2, dim_y=2),
                           output_action="vector")


def test_full_covariance_turns_as_rho_sigma_rho_t(float64):
    task = random_task(dim_x=2, dim_y=2)
    assert_equivariant(VectorSmoother(full=True), O(2), task, output_action="vector")
    with pytest.raises(AssertionError, match="not equivariant"):
        assert_equivariant(VectorSmoother(full=True, broken=True), O(2), task,
                           output_action="vector")


def test_scalar_treatment_of_a_vector_field_is_caught(float64):
    """The E-TNP built for two scalar outputs is exactly E(2)-invariant per component; read as
    one vector field its prediction does not turn with the scene, and the check says so."""
    model = build_model("e-tnp", 2, 2, width=16, num_layers=1, num_heads=2)
    task = random_task(dim_x=2, dim_y=2)
    assert_equivariant(model, model.symmetry, task)  # fine as two scalars
    with pytest.raises(AssertionError, match="not equivariant"):
        assert_equivariant(model, model.symmetry, task, output_action="vector")


def test_output_action_is_checked_against_the_task(float64):
    with pytest.raises(ValueError, match="^dim_y: "):
        assert_equivariant(VectorSmoother(), O(2), random_task(dim_x=2, dim_y=3),
                           output_action="vector")
