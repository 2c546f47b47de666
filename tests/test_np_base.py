"""The shape every neural process shares: NeuralProcess(encoder, decoder, likelihood), the build
spec, checkpoints of the earlier module layout, and the package's import structure."""

from __future__ import annotations

import inspect
import pathlib

import pytest
import torch
from torch import nn

import approxeq
import approxeq.np
from approxeq.np import NeuralProcess, available_models, build_model, model_options
from approxeq.testing import random_task
from approxeq.train.checkpoint import load_checkpoint, load_model, save_checkpoint

# Parameter counts recorded before the models were recomposed as NeuralProcess: a checkpoint's
# build spec must rebuild a model of the same size.
PARAMETER_COUNTS = [
    ("cnp", 1, 1, {}, 165890),
    ("tnp", 1, 1, {}, 1060098),
    ("tnp", 2, 1, {"dim_aux": 2}, 1077122),
    ("pt-tnp", 1, 1, {}, 1561474),
    ("pt-tnp", 1, 1, {"variant": "ist"}, 1463298),
    ("te-tnp", 1, 1, {}, 1248210),
    ("te-tnp", 2, 1, {"approximate": True, "dim_aux": 2}, 1299794),
    ("te-pt-tnp", 1, 1, {}, 1843738),
    ("te-pt-tnp", 2, 1, {"approximate": True, "dim_aux": 1, "variant": "ist"}, 1778738),
    ("convcnp", 1, 1, {}, 48516),
    ("convcnp", 2, 1, {"approximate": True, "dim_aux": 2}, 134952),
    ("convcnp", 1, 1, {"cnn": "unet", "approximate": True, "fixed_input_mode": "concat"}, 170724),
    ("relaxed-convcnp", 1, 1, {}, 147091),
    ("equivcnp", 2, 1, {}, 53028),
    ("equivcnp", 2, 1, {"approximate": True, "dim_aux": 2, "group": "D8"}, 108940),
    ("equivcnp", 2, 1, {"group": "C4"}, 27428),
    ("e-tnp", 2, 1, {}, 1248210),
    ("e-tnp", 2, 1, {"approximate": True, "dim_aux": 1}, 1298386),
    ("lps-tnp", 2, 1, {}, 1063241),
    ("lps-tnp", 2, 1, {"approximate": True, "dim_aux": 1}, 1113417),
]


@pytest.mark.parametrize("name, dim_x, dim_y, options, count", PARAMETER_COUNTS,
                         ids=[f"{s[0]}-{i}" for i, s in enumerate(PARAMETER_COUNTS)])
def test_parameter_counts_unchanged(name, dim_x, dim_y, options, count):
    model = build_model(name, dim_x, dim_y, **options)
    assert sum(p.numel() for p in model.parameters()) == count


def test_every_registered_model_is_a_neural_process_with_its_build_spec():
    names = set(available_models())
    assert {"cnp", "tnp", "pt-tnp", "te-tnp", "te-pt-tnp", "convcnp", "relaxed-convcnp",
            "equivcnp", "e-tnp", "lps-tnp"} <= names
    for name in names:
        dim_x = 2 if name in ("equivcnp", "e-tnp", "lps-tnp") else 1
        model = build_model(name, dim_x, 1, min_std=0.01)
        assert isinstance(model, NeuralProcess)
        for part in (model.encoder, model.decoder, model.likelihood):
            assert isinstance(part, nn.Module)
        assert (model.model_name, model.build_options) == (name, {"min_std": 0.01})
        assert (model.dim_x, model.dim_y) == (dim_x, 1)
        assert hasattr(model, "symmetry")
        # the spec rebuilds a model of the same layout
        again = build_model(model.model_name, model.dim_x, model.dim_y, **model.build_options)
        again.load_state_dict(model.state_dict())


def test_builders_take_explicit_keywords():
    from approxeq.np.registry import _REGISTRY

    for name in available_models():
        params = inspect.signature(_REGISTRY[name]).parameters.values()
        assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params), name
        assert "min_std" in model_options(name)
        with pytest.raises(ValueError, match=rf"{name}: unknown option\(s\) 'nope'; accepted "
                                             r"options are .*min_std"):
            build_model(name, 2, 1, nope=1)


def test_neural_process_composes_injected_parts(gen):
    """A user's own parts: likelihood(decoder(encoder(xc, yc, xt))), with the shared checks."""
    from approxeq.np import HeteroscedasticGaussian

    class MeanEncoder(nn.Module):
        def forward(self, xc, yc, xt):
            r = yc.mean(1, keepdim=True) if yc.shape[1] else yc.new_zeros(yc.shape[0], 1, 1)
            return torch.cat([r.expand(-1, xt.shape[1], -1), xt], -1)

    model = NeuralProcess(MeanEncoder(), nn.Linear(2, 2), HeteroscedasticGaussian(), dim_x=1,
                          dim_y=1)
    xc, yc, xt = random_task(2, 5, 3, generator=gen)
    assert model(xc, yc, xt).batch_shape == (2, 3, 1)
    assert model(xc[:, :0], yc[:, :0], xt).batch_shape == (2, 3, 1)
    with pytest.raises(ValueError, match="xc: NeuralProcess was built for dim_x = 1"):
        model(torch.randn(2, 5, 2), yc, torch.randn(2, 3, 2))
    with pytest.raises(ValueError, match="aux_c/aux_t: this model was built with dim_aux = 0"):
        model(xc, yc, xt, aux_c=torch.randn(2, 5, 1), aux_t=torch.randn(2, 3, 1))
    with pytest.raises(TypeError, match="dtype torch.float64 does not match"):
        model(xc.double(), yc.double(), xt.double())
    with pytest.raises(ValueError, match="dim_aux: expected an int >= 0"):
        NeuralProcess(MeanEncoder(), nn.Linear(2, 2), HeteroscedasticGaussian(), dim_x=1,
                      dim_y=1, dim_aux=-1)


# Prefixes of the module layout before the recomposition, per model: weights saved then load.
OLD_LAYOUT = {
    "cnp": {"encoder.mlp.": "encoder."},
    "tnp": {"encoder.token_embedding.": "token_embedding.",
            "encoder.aux_embedding.": "aux_embedding."},
    "te-pt-tnp": {"encoder.token_embedding.": "token_embedding.",
                  "encoder.pseudo_fixed_input.": "fixed_input.",
                  "encoder.pseudo_tokens": "pseudo_tokens",
                  "encoder.pseudo_offsets": "pseudo_offsets"},
    "lps-tnp": {"encoder.symmetrized.base.tnp.encoder.token_embedding.":
                "symmetrized.base.tnp.token_embedding.",
                "encoder.symmetrized.": "symmetrized.", "encoder.fixed_input.": "fixed_input."},
}


@pytest.mark.parametrize("name", sorted(OLD_LAYOUT))
def test_checkpoints_of_the_earlier_layout_load(gen, tmp_path, name):
    dim_x = 2
    options = {"approximate": True} if name in ("te-pt-tnp", "lps-tnp") else {}
    model = build_model(name, dim_x, 1, width=16, num_layers=2, num_heads=4,
                        num_pseudo_tokens=4, **options).eval()
    old = {}
    for key, value in model.state_dict().items():
        for new, before in OLD_LAYOUT[name].items():
            if key.startswith(new):
                key = before + key[len(new):]
                break
        old[key] = value
    assert set(old) != set(model.state_dict())
    path = save_checkpoint(tmp_path / "old.pt", model)
    raw = torch.load(path, weights_only=True)
    torch.save({**raw, "model": old}, path)
    fresh = build_model(name, dim_x, 1, width=16, num_layers=2, num_heads=4,
                        num_pseudo_tokens=4, **options).eval()
    with pytest.raises(RuntimeError, match="Missing key"):  # the model knows only its layout
        fresh.load_state_dict(old, strict=True)
    load_checkpoint(path, fresh, strict=True)  # the checkpoint layer upgrades the old keys
    rebuilt = load_model(path)
    assert all(torch.equal(v, rebuilt.state_dict()[k]) for k, v in fresh.state_dict().items())
    task = random_task(2, 5, 3, dim_x, 1, generator=gen)
    torch.manual_seed(0)
    expected = model(*task).mean
    torch.manual_seed(0)
    torch.testing.assert_close(fresh(*task).mean, expected, rtol=0, atol=0)


def test_predict_is_the_function():
    from approxeq.np import predict
    from approxeq.np.prediction import coordinate_names, require_xarray  # noqa: F401

    assert inspect.isfunction(predict) and approxeq.np.predict is predict
    assert predict.__module__ == "approxeq.np.prediction"


def test_subclasses_keep_their_parents_forward_signature():
    """A module that can stand where its parent stands: no override changes the inputs."""
    import approxeq.nn as ann
    import approxeq.np.models as models

    classes = set()
    for package in (ann, models, approxeq.np):
        root = pathlib.Path(package.__file__).parent
        for path in root.glob("*.py"):
            module = __import__(f"{package.__name__}.{path.stem}", fromlist=["_"])
            classes.update(c for _, c in inspect.getmembers(module, inspect.isclass)
                           if issubclass(c, nn.Module) and c.__module__.startswith("approxeq"))
    for cls in classes:
        if "forward" not in vars(cls):
            continue
        for base in cls.__mro__[1:]:
            if base in (nn.Module, object) or "forward" not in vars(base):
                continue
            names = list(inspect.signature(cls.forward).parameters)
            parent = list(inspect.signature(base.forward).parameters)
            assert names == parent, (f"{cls.__name__}.forward{names} changes "
                                     f"{base.__name__}.forward{parent}")
