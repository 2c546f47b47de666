"""Building blocks: MLP, attention, translation-equivariant attention, set convolutions,
CNN/UNet, group convolutions, GIN and vector neurons."""

from approxeq.nn.attention import (
                                   CrossAttentionLayer,
                                   FeedForward,
                                   MultiHeadAttention,
                                   SelfAttentionLayer,
                                   masked_attention,
)
from approxeq.nn.cnn import CNN, ConvBlock, UNet, build_cnn, make_conv
from approxeq.nn.gin import GIN, GINLayer, MaskedBatchNorm
from approxeq.nn.graph_models import GraphGIN, GraphMLP, NBodyTransformer
from approxeq.nn.group_conv import GroupCNN, GroupConv2d, GroupPool, LiftingConv2d
from approxeq.nn.mlp import MLP
from approxeq.nn.setconv import SetConvDecoder, SetConvEncoder, grid_points, lattice_grid
from approxeq.nn.te_attention import (
                                   TECrossAttentionLayer,
                                   TEMultiHeadAttention,
                                   TESelfAttentionLayer,
                                   set_chunk_size,
)
from approxeq.nn.vector_neurons import (
                                   VNInvariant,
                                   VNLeakyReLU,
                                   VNLinear,
                                   VNMaxPool,
                                   VNNetwork,
                                   VNReLU,
                                   vn_mean_pool,
)

__all__ = [
    "CrossAttentionLayer", "FeedForward", "MultiHeadAttention", "SelfAttentionLayer",
    "masked_attention", "CNN", "ConvBlock", "UNet", "build_cnn", "make_conv", "GIN", "GINLayer",
    "MaskedBatchNorm", "GroupCNN", "GroupConv2d", "GroupPool", "LiftingConv2d", "MLP",
    "SetConvDecoder", "SetConvEncoder", "grid_points", "lattice_grid", "TECrossAttentionLayer",
    "TEMultiHeadAttention", "TESelfAttentionLayer", "set_chunk_size", "VNInvariant",
    "VNLeakyReLU", "VNLinear", "VNMaxPool", "VNNetwork", "VNReLU", "vn_mean_pool",
]
__all__ += ["GraphGIN", "GraphMLP", "NBodyTransformer"]
