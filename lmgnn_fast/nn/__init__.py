"""Neural network modules: relational graph convolution and the R-GCN encoder."""
from lmgnn_fast.nn.conv import RGCNConv
from lmgnn_fast.nn.rgcn import RGCN

__all__ = ["RGCN", "RGCNConv"]
