"""A patch vision transformer whose parameters are laid out as timm's ``VisionTransformer``, so
pretrained image weights load into it, and the loaders that do so.

The backbone is written here rather than taken from timm: timm needs torchvision, whose wheels
are built against one torch release (a CPU torch cannot load the default CUDA torchvision), and
the graph experiments must run without either. Weights still come from timm when it is
installed (:func:`vit_from_timm`), or from any local checkpoint file (:func:`load_vit`), which is
how machines without network access use pretrained weights.

Parameter names match timm's (``patch_embed.proj``, ``cls_token``, ``pos_embed``,
``blocks.{i}.norm1`` / ``attn.qkv`` / ``attn.proj`` / ``norm2`` / ``mlp.fc1`` / ``mlp.fc2``,
``norm``), so a timm ViT's ``state_dict()`` loads unchanged when the channels match.
"""

from __future__ import annotations

import math
import os
import pickle
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from approxeq.files import save_atomic

__all__ = [
    "ViTConfig",
    "VisionTransformer",
    "load_vit",
    "save_vit",
    "vit_from_timm",
    "vit_param_groups",
]


@dataclass(frozen=True)
class ViTConfig:
    """Architecture of a :class:`VisionTransformer`.

    Attributes:
        patch_size: side of the square patches, in pixels.
        in_channels: image channels.
        embed_dim: token width ``D``.
        depth: number of transformer blocks.
        num_heads: attention heads (must divide ``embed_dim``).
        mlp_ratio: hidden width of the blocks' MLP, as a multiple of ``embed_dim``.
        grid_size: patches per side that the positional embedding is stored for; other grids
            interpolate it.
        class_token: prepend a learned class token.
    """

    patch_size: int = 16
    in_channels: int = 3
    embed_dim: int = 192
    depth: int = 12
    num_heads: int = 3
    mlp_ratio: float = 4.0
    grid_size: int = 14
    class_token: bool = True

    def __post_init__(self) -> None:
        for name in ("patch_size", "in_channels", "embed_dim", "depth", "num_heads",
                     "grid_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"num_heads: must divide embed_dim = {self.embed_dim}, got "
                             f"{self.num_heads}")
        if isinstance(self.mlp_ratio, bool) or not isinstance(self.mlp_ratio, (int, float)) \
                or not self.mlp_ratio > 0:
            raise ValueError(f"mlp_ratio: expected a number > 0, got {self.mlp_ratio!r}")


class _Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads: must divide embed_dim = {dim}, got {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, key_mask: Tensor | None) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn_mask = None if key_mask is None else key_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        # timm's ViTs use eps = 1e-6; the same value keeps pretrained blocks' outputs unchanged
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, key_mask: Tensor | None) -> Tensor:
        x = x + self.attn(self.norm1(x), key_mask)
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """A pre-norm ViT on channels-last images of any size divisible by the patch size.

    Args:
        config: the architecture (:class:`ViTConfig`); keyword arguments override its fields.

    Attributes:
        pretrained_names: names of the parameters that were loaded from pretrained weights
            (empty for a model trained from scratch); see :func:`vit_param_groups`.

    Shapes: ``forward(image [b, H, W, C], pixel_mask [b, H, W] | None)`` returns the normed
    tokens ``[b, T + H·W / p², D]`` (``T = 1`` with a class token, else 0), patches in row-major
    order. A patch with no valid pixel is masked out as an attention key.
    """

    def __init__(self, config: ViTConfig | None = None, **overrides) -> None:
        super().__init__()
        config = ViTConfig(**{**asdict(config or ViTConfig()), **overrides})
        self.config = config
        p, d = config.patch_size, config.embed_dim
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(config.in_channels, d, p, stride=p)
        n_prefix = 1 if config.class_token else 0
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d)) if config.class_token else None
        self.pos_embed = nn.Parameter(torch.randn(1, n_prefix + config.grid_size ** 2, d) * 0.02)
        self.blocks = nn.ModuleList(_Block(d, config.num_heads, config.mlp_ratio)
                                    for _ in range(config.depth))
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.pretrained_names: frozenset[str] = frozenset()

    @property
    def num_prefix_tokens(self) -> int:
        """1 with a class token, else 0."""
        return 1 if self.config.class_token else 0

    def position_embedding(self, grid: tuple[int, int]) -> Tensor:
        """``[1, T + gh·gw, D]``: the stored positional embedding, bicubically resampled to a
        ``gh × gw`` patch grid if it differs from the stored one (the class token's entry is
        kept as it is)."""
        t, g = self.num_prefix_tokens, self.config.grid_size
        if grid == (g, g):
            return self.pos_embed
        prefix, patches = self.pos_embed[:, :t], self.pos_embed[:, t:]
        return torch.cat([prefix, resample_position_embedding(patches, (g, g), grid)], dim=1)

    def forward(self, image: Tensor, pixel_mask: Tensor | None = None) -> Tensor:
        if image.dim() != 4 or image.shape[-1] != self.config.in_channels:
            raise ValueError(f"image: expected [b, H, W, {self.config.in_channels}], got "
                             f"{tuple(image.shape)}")
        b, h, w, _ = image.shape
        p = self.config.patch_size
        if h % p or w % p:
            raise ValueError(f"image: height and width must be multiples of the patch size {p}, "
                             f"got {h} x {w}")
        x = self.patch_embed.proj(image.permute(0, 3, 1, 2))  # [b, D, gh, gw]
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)
        x = x + self.position_embedding(grid).to(x.dtype)
        key_mask = None
        if pixel_mask is not None:
            if pixel_mask.shape != (b, h, w):
                raise ValueError(f"pixel_mask: expected [{b}, {h}, {w}], got "
                                 f"{tuple(pixel_mask.shape)}")
            patches = pixel_mask.bool().reshape(b, grid[0], p, grid[1], p).any(4).any(2)
            prefix = torch.ones(b, self.num_prefix_tokens, dtype=torch.bool, device=x.device)
            key_mask = torch.cat([prefix, patches.flatten(1)], dim=1)
        for block in self.blocks:
            x = block(x, key_mask)
        return self.norm(x)

    def load_pretrained(self, state_dict: Mapping[str, Tensor], *,
                        keep_patch_embed: bool | None = None) -> list[str]:
        """Copy pretrained weights in: the blocks, the final norm, the class token and the
        positional embedding (resampled to this model's grid); the patch embedding only if
        ``keep_patch_embed`` (default: when its shape matches), since a new input modality
        needs its own. Keys outside the backbone (a classifier ``head``) are ignored.

        Returns:
            the names of the parameters loaded (also kept in :attr:`pretrained_names`).
        Raises:
            ValueError: if a block's weights are missing or their shapes differ.
        """
        own = dict(self.named_parameters())
        state = {k.removeprefix("module."): v for k, v in state_dict.items()}
        if keep_patch_embed is None:  # weight and bias go together: decide on the weight
            weight = state.get("patch_embed.proj.weight")
            keep_patch_embed = weight is not None and \
                weight.shape == self.patch_embed.proj.weight.shape
        loaded: list[str] = []
        with torch.no_grad():
            for name, param in own.items():
                if name not in state:
                    if name.startswith(("blocks.", "norm.")):
                        raise ValueError(f"state_dict: missing {name!r} (expected a ViT with "
                                         f"depth {self.config.depth})")
                    continue
                value = state[name]
                if name == "pos_embed":
                    value = self._resample_loaded_positions(value)
                if name.startswith("patch_embed.") and not keep_patch_embed:
                    continue
                if value.shape != param.shape:
                    raise ValueError(f"state_dict[{name!r}]: expected shape "
                                     f"{tuple(param.shape)}, got {tuple(value.shape)}")
                param.copy_(value.to(param.dtype))
                loaded.append(name)
        self.pretrained_names = frozenset(loaded)
        return loaded

    def _resample_loaded_positions(self, value: Tensor) -> Tensor:
        t = self.num_prefix_tokens
        n_patches = value.shape[1] - t
        side = math.isqrt(n_patches)
        if side * side != n_patches:  # a checkpoint without a class-token entry
            side = math.isqrt(value.shape[1])
            value = torch.cat([value.new_zeros(1, t, value.shape[-1]), value], dim=1)
        g = self.config.grid_size
        patches = resample_position_embedding(value[:, t:], (side, side), (g, g))
        return torch.cat([value[:, :t], patches], dim=1)


def resample_position_embedding(patches: Tensor, old: tuple[int, int],
                                new: tuple[int, int]) -> Tensor:
    """``[1, oh·ow, D]`` patch positional embeddings bicubically resampled to ``[1, nh·nw, D]``."""
    if tuple(old) == tuple(new):
        return patches
    d = patches.shape[-1]
    grid = patches.reshape(1, old[0], old[1], d).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new, mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(1, new[0] * new[1], d)


def save_vit(model: VisionTransformer, path: str | os.PathLike) -> Path:
    """Write ``{"config": ..., "state_dict": ...}`` to ``path`` atomically
    (:func:`~approxeq.files.save_atomic`), so a crash never leaves half a checkpoint."""
    return save_atomic({"config": asdict(model.config), "state_dict": model.state_dict()}, path)


def _unreadable(path: Path, err: BaseException) -> ValueError:
    """The error for a weights file that cannot be read: named, with what to do, and never a
    suggestion to load it unsafely (torch's own message for a file holding Python objects
    suggests ``weights_only=False``, which runs code from the file)."""
    if path.stat().st_size == 0:
        why = "it is empty"
    elif isinstance(err, pickle.UnpicklingError) and "weights_only" in str(err):
        why = ("it holds Python objects besides tensors and plain containers, which are never "
               "loaded (loading them could run code from the file)")
    else:
        first = str(err).strip().splitlines()[0][:120] if str(err).strip() else ""
        why = f"it is truncated or damaged ({type(err).__name__}{': ' + first if first else ''})"
    return ValueError(f"path: {path} is not a readable ViT weights file: {why}. Save the "
                      "weights again (save_vit, or torch.save(model.state_dict(), path))")


def _read_checkpoint(path: Path) -> tuple[dict | None, dict[str, Tensor]]:
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as err:
            raise ImportError(f"path: {path} is a safetensors file; install safetensors "
                              "(pip install safetensors) to read it") from err
        try:
            return None, load_file(str(path))
        except Exception as err:  # safetensors raises its own error types
            raise _unreadable(path, err) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for an empty or damaged file
        raise _unreadable(path, err) from None
    if not isinstance(obj, Mapping):
        raise ValueError(f"path: {path} holds a {type(obj).__name__}, expected a state dict")
    config = obj.get("config") if isinstance(obj.get("config"), Mapping) else None
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(obj.get(key), Mapping):
            return config, dict(obj[key])
    return config, {k: v for k, v in obj.items() if isinstance(v, Tensor)}


def _config_from_state(state: Mapping[str, Tensor], num_heads: int | None) -> dict:
    if "pos_embed" not in state or "patch_embed.proj.weight" not in state:
        raise ValueError("state_dict: not a ViT (needs 'pos_embed' and "
                         "'patch_embed.proj.weight')")
    if num_heads is None:
        raise ValueError("num_heads: the checkpoint does not record its architecture; pass "
                         "num_heads (e.g. 3 for ViT-Ti, 6 for ViT-S, 12 for ViT-B)")
    weight = state["patch_embed.proj.weight"]
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    d = weight.shape[0]
    class_token = "cls_token" in state
    n_patches = state["pos_embed"].shape[1] - (1 if class_token else 0)
    return {"patch_size": weight.shape[-1], "in_channels": weight.shape[1], "embed_dim": d,
            "depth": depth, "num_heads": num_heads,
            "mlp_ratio": state["blocks.0.mlp.fc1.weight"].shape[0] / d,
            "grid_size": math.isqrt(n_patches), "class_token": class_token}


def load_vit(path: str | os.PathLike, *, in_channels: int | None = None,
             grid_size: int | None = None, num_heads: int | None = None,
             keep_patch_embed: bool | None = None) -> VisionTransformer:
    """A :class:`VisionTransformer` with the pretrained weights of a local checkpoint.

    Args:
        path: a file written by :func:`save_vit`, a ``torch.save``-d timm ViT ``state_dict``
            (optionally under a ``"state_dict"`` or ``"model"`` key), or a ``.safetensors``
            file (as on the Hugging Face hub).
        in_channels: channels of the new input; a new patch embedding is made when they differ
            from the checkpoint's (default: the checkpoint's).
        grid_size: patches per side to store the positional embedding for (default: the
            checkpoint's); the pretrained one is resampled.
        num_heads: attention heads, needed when the file does not record its architecture.
        keep_patch_embed: see :meth:`VisionTransformer.load_pretrained`.
    Returns:
        the model, with :attr:`~VisionTransformer.pretrained_names` set.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no checkpoint file at {path}")
    config, state = _read_checkpoint(path)
    try:
        config = dict(config) if config is not None else _config_from_state(state, num_heads)
    except ValueError as err:  # the state dict of something else: name the file
        raise ValueError(f"path: {path}: {err}") from None
    if num_heads is not None:
        config["num_heads"] = num_heads
    if in_channels is not None:
        config["in_channels"] = in_channels
    if grid_size is not None:
        config["grid_size"] = grid_size
    model = VisionTransformer(ViTConfig(**config))
    model.load_pretrained(state, keep_patch_embed=keep_patch_embed)
    return model


def vit_from_timm(name: str, *, pretrained: bool = True, in_channels: int | None = None,
                  grid_size: int | None = None) -> VisionTransformer:
    """A :class:`VisionTransformer` with the weights of timm model ``name`` (e.g.
    ``"vit_base_patch16_224"``), downloaded by timm when ``pretrained``.

    Needs the ``vision`` extra (timm and a torchvision built for the installed torch). On a
    machine without network access, save the weights elsewhere (``torch.save(model.state_dict(),
    f)``) and use :func:`load_vit`.
    """
    try:
        import timm
    except Exception as err:  # a torchvision built for another torch fails with RuntimeError
        raise ImportError(f"vit_from_timm({name!r}) needs timm: pip install 'approxeq[vision]' "
                          f"(import failed: {err})") from err
    source = timm.create_model(name, pretrained=pretrained, num_classes=0)
    first = source.blocks[0]
    config = ViTConfig(patch_size=source.patch_embed.patch_size[0],
                       in_channels=source.patch_embed.proj.in_channels,
                       embed_dim=source.embed_dim, depth=len(source.blocks),
                       num_heads=first.attn.num_heads,
                       mlp_ratio=first.mlp.fc1.out_features / source.embed_dim,
                       grid_size=source.patch_embed.grid_size[0],
                       class_token=source.cls_token is not None)
    overrides = {k: v for k, v in (("in_channels", in_channels), ("grid_size", grid_size))
                 if v is not None}
    model = VisionTransformer(config, **overrides)
    model.load_pretrained(source.state_dict())
    return model


def vit_param_groups(model: nn.Module, *, lr: float, pretrained_lr: float,
                     weight_decay: float = 0.0) -> list[dict]:
    """Optimiser parameter groups: parameters loaded from pretrained weights (in any
    :class:`VisionTransformer` inside ``model``) at ``pretrained_lr``, every other one at ``lr``.

    Returns:
        a list for ``torch.optim.*(groups)``; a group with no parameters is left out.
    """
    pretrained: set[int] = set()
    for module in model.modules():
        if isinstance(module, VisionTransformer):
            params = dict(module.named_parameters())
            pretrained |= {id(params[n]) for n in module.pretrained_names}
    new = [p for p in model.parameters() if id(p) not in pretrained]
    old = [p for p in model.parameters() if id(p) in pretrained]
    groups: Iterable[tuple[list, float]] = ((old, pretrained_lr), (new, lr))
    return [{"params": ps, "lr": rate, "weight_decay": weight_decay}
            for ps, rate in groups if ps]
