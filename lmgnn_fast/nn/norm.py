"""Layer normalization whose CPU gradients do not depend on the thread count."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LayerNorm"]


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` (same parameters and state dict) whose weight and bias gradients on
    the CPU are the same for any ``torch.set_num_threads``.

    torch's CPU layer-norm backward sums the weight and bias gradients over the rows in
    per-thread partial sums, so they change in the last bits with the thread count. Here
    the CPU path normalizes without the affine part and applies it as an elementwise
    multiply-add, whose gradients autograd reduces over the rows in one fixed order. CUDA
    tensors take torch's fused kernel.
    """

    def forward(self, x: Tensor) -> Tensor:
        """``x [..., D]`` normalized over its last dimensions, scaled and shifted."""
        if x.is_cuda or not self.elementwise_affine:
            return super().forward(x)
        y = F.layer_norm(x, self.normalized_shape, None, None, self.eps)
        y = y * self.weight
        return y + self.bias if self.bias is not None else y
