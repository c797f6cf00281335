"""Language-model side: encoder wrapper, tokenization cache, tiny test model."""
from lmgnn_fast.lm.model import LMEncoder, LMLoadError, default_model_path
from lmgnn_fast.lm.tiny import make_tiny_bert
from lmgnn_fast.lm.tokens import TokenizedTexts, texts_fingerprint, tokenize_texts

__all__ = ["LMEncoder", "LMLoadError", "default_model_path", "make_tiny_bert", "TokenizedTexts",
           "texts_fingerprint", "tokenize_texts"]
