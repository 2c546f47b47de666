"""Build options are checked for type and range in one line naming the option, and grid models
refuse a grid beyond their memory budget before allocating it."""

from __future__ import annotations

import time

import pytest
import torch
import yaml

from approxeq.np import available_models, build_model, model_options

SMALL_TOKENS = dict(width=8, num_layers=1, num_heads=2, num_pseudo_tokens=2)
APPROXIMABLE = ["te-tnp", "te-pt-tnp", "e-tnp", "lps-tnp", "convcnp", "equivcnp"]


def dims(name):
    return (2, 1) if name in ("equivcnp", "e-tnp", "lps-tnp") else (1, 1)


@pytest.mark.parametrize("name", APPROXIMABLE)
def test_a_string_is_not_a_bool(name):
    with pytest.raises(ValueError, match=r"^approximate: expected a bool, got the string "
                                         r"'false'$"):
        build_model(name, *dims(name), approximate="false")


def test_a_yaml_string_is_not_a_bool():
    options = yaml.safe_load("approximate: 'false'\nwidth: 16\n")
    with pytest.raises(ValueError, match="approximate: expected a bool, got the string 'false'"):
        build_model("te-tnp", 1, 1, **options)
    options = yaml.safe_load("approximate: false\nwidth: 16\nnum_heads: 4\nnum_layers: 1\n")
    assert not build_model("te-tnp", 1, 1, **options).approximate


@pytest.mark.parametrize("name", sorted(["cnp", "tnp", "pt-tnp", "te-tnp", "te-pt-tnp", "e-tnp",
                                         "lps-tnp", "convcnp", "relaxed-convcnp", "equivcnp"]))
@pytest.mark.parametrize("value, message", [
    (float("nan"), r"min_std: expected a finite number >= 0, got nan"),
    (-0.1, r"min_std: expected a number >= 0, got -0.1"),
    ("0.01", r"min_std: expected a number >= 0, got the string '0.01'"),
    (True, r"min_std: expected a number >= 0, got True"),
])
def test_std_floor_is_a_finite_non_negative_number(name, value, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        build_model(name, *dims(name), min_std=value)


@pytest.mark.parametrize("name, option, value, message", [
    ("tnp", "width", 0, r"width: expected an int >= 1, got 0"),
    ("tnp", "width", 16.0, r"width: expected an int >= 1, got 16.0"),
    ("tnp", "num_heads", -2, r"num_heads: expected an int >= 1, got -2"),
    ("te-tnp", "num_layers", 0, r"num_layers: expected an int >= 1, got 0"),
    ("pt-tnp", "num_pseudo_tokens", "4", r"num_pseudo_tokens: expected an int >= 1, got the "
                                         r"string '4'"),
    ("convcnp", "channels", 0, r"channels: expected an int >= 1, got 0"),
    ("convcnp", "points_per_unit", float("inf"), r"points_per_unit: expected a finite number "
                                                 r"> 0, got inf"),
    ("convcnp", "points_per_unit", 0, r"points_per_unit: expected a number > 0, got 0"),
    ("convcnp", "cnn", "resnet", r"cnn: expected one of 'conv', 'unet', got the string 'resnet'"),
    ("convcnp", "margin", -1.0, r"margin: expected a number >= 0, got -1.0"),
    ("convcnp", "max_grid_mb", 0.0, r"max_grid_mb: expected a number > 0, got 0.0"),
    ("equivcnp", "pool", "sum", r"pool: expected one of 'mean', 'max', got the string 'sum'"),
    ("equivcnp", "group", 4, r"group: expected a string, got 4"),
    ("te-tnp", "fixed_input_dropout", 1.0, r"fixed_input_dropout: expected a number in \[0, 1\), "
                                           r"got 1.0"),
    ("te-tnp", "aux_dropout", -0.5, r"aux_dropout: expected a number in \[0, 1\), got -0.5"),
    ("te-tnp", "chunk_size", 0, r"chunk_size: expected an int >= 1, got 0"),
    ("te-tnp", "memory_budget_mb", float("nan"), r"memory_budget_mb: expected a finite number "
                                                 r"> 0, got nan"),
    ("te-tnp", "num_fixed_inputs", 0, r"num_fixed_inputs: expected an int >= 1, got 0"),
    ("te-tnp", "fixed_input_domain", [(2.0, -2.0)], r"fixed_input_domain: expected a box"),
    ("te-tnp", "fixed_input_domain", "[-2, 2]", r"fixed_input_domain: expected a box"),
    ("lps-tnp", "noise_scale", float("nan"), r"noise_scale: expected a finite number >= 0"),
    ("lps-tnp", "aggregate", "mean", r"aggregate: expected one of 'gaussian', 'mixture'"),
    ("lps-tnp", "n_samples_eval", 0, r"n_samples_eval: expected an int >= 1, got 0"),
    ("relaxed-convcnp", "num_basis", 0, r"num_basis: expected an int >= 1, got 0"),
    ("pt-tnp", "variant", "perciever", r"variant: expected one of 'perceiver', 'ist', got the "
                                       r"string 'perciever'"),
    ("tnp", "dim_aux", -1, r"dim_aux: expected an int >= 0, got -1"),
    ("convcnp", "dim_aux", 1.5, r"dim_aux: expected an int >= 0, got 1.5"),
])
def test_bad_option_values_are_refused_by_name(name, option, value, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        build_model(name, *dims(name), **{option: value})


def test_valid_values_of_every_kind_pass():
    build_model("convcnp", 1, 1, points_per_unit=8, channels=4, num_layers=1, margin=0,
                num_fixed_inputs=None, approximate=True, fixed_input_domain=[[-1, 1]],
                cnn="unet", min_std=0)
    build_model("te-tnp", 1, 1, **SMALL_TOKENS, chunk_size=None, fixed_input_dropout=0.0,
                approximate=True, fixed_input_domain=((-1, 1),))


def test_every_option_of_every_model_has_a_checked_type():
    """Each option is annotated with a kind the checks know; numbers have a declared range."""
    import typing

    from approxeq.np.options import OPTION_RANGES
    from approxeq.np.registry import _REGISTRY

    for name in available_models():
        hints = typing.get_type_hints(_REGISTRY[name])
        for option in model_options(name):
            assert option in hints, f"{name}: option {option} has no annotation"
            kinds = [k for k in typing.get_args(hints[option]) or (hints[option],)
                     if k is not type(None)]
            if kinds in ([int], [float]):
                assert option in OPTION_RANGES, f"{name}: option {option} has no declared range"


# ----------------------------------------------------------------------------- the grid bound

FAR = {"convcnp": (1, [1e7]), "relaxed-convcnp": (1, [1e7]), "equivcnp": (2, [1e4, 0.0])}


@pytest.mark.parametrize("name", sorted(FAR))
def test_a_far_target_is_refused_before_the_grid_is_built(name):
    dim_x, far = FAR[name]
    model = build_model(name, dim_x, 1, channels=4, num_layers=2,
                        **({"kernel_size": 3} if name == "equivcnp" else {}))
    xc, yc = torch.rand(2, 5, dim_x), torch.randn(2, 5, 1)
    xt = torch.cat([torch.rand(2, 3, dim_x), torch.tensor(far).expand(2, 1, dim_x)], 1)
    start = time.perf_counter()
    with pytest.raises(ValueError) as info:
        model(xc, yc, xt)
    assert time.perf_counter() - start < 2.0
    message = str(info.value)
    assert message.startswith(f"xc, xt: {name} would need a grid of ")
    ppu = model.points_per_unit
    assert f"points_per_unit = {ppu:g}" in message
    assert f"{far[0]:.4g}" in message  # the extent reaches the far target
    assert "GiB of activations" in message and "max_grid_mb = 8192" in message


@pytest.mark.parametrize("name", sorted(FAR))
def test_the_grid_budget_is_an_option(gen, name):
    dim_x = FAR[name][0]
    options = dict(channels=4, num_layers=2, **({"kernel_size": 3} if name == "equivcnp" else {}))
    xc, yc = torch.rand(2, 5, dim_x, generator=gen), torch.randn(2, 5, 1, generator=gen)
    xt = torch.rand(2, 4, dim_x, generator=gen)
    assert build_model(name, dim_x, 1, **options)(xc, yc, xt).batch_shape == (2, 4, 1)
    tiny = build_model(name, dim_x, 1, max_grid_mb=1e-4, **options)
    with pytest.raises(ValueError, match="over max_grid_mb = 0.0001; .* raise max_grid_mb"):
        tiny(xc, yc, xt)
    roomy = build_model(name, dim_x, 1, max_grid_mb=1e6, **options)
    assert roomy(xc, yc, xt * 3).batch_shape == (2, 4, 1)
