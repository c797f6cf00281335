"""Neural network modules: relational graph convolution, the R-GCN encoder, the HGT and RGAT
attention encoders, task heads and the graph model."""
from lmgnn_fast.nn.attention import HGT, RGAT, HGTConv, RGATConv
from lmgnn_fast.nn.conv import RGCNConv
from lmgnn_fast.nn.heads import EdgeHead, LinkDecoder, NodeHead, bce_link_loss, contrastive_loss
from lmgnn_fast.nn.model import GraphModel
from lmgnn_fast.nn.rgcn import RGCN

__all__ = ["RGCN", "RGCNConv", "HGT", "HGTConv", "RGAT", "RGATConv", "GraphModel", "NodeHead", "EdgeHead",
           "LinkDecoder", "contrastive_loss", "bce_link_loss"]
