"""approxeq: exact, learned and approximate equivariance for PyTorch.

Layers (imports point down this list only): ``groups`` → ``nn`` → ``symmetrize`` →
``approximate`` → ``np`` → ``data`` → ``train`` → ``plot`` → ``cli``.
"""

__version__ = "0.1.0"
