#!/usr/bin/env python3
"""App-side check of an edgepipe bundle: text in, label out, from the bundle folder alone.

Does what a mobile app does - tokenization with the shipped tokenizer files (BERT WordPiece from
vocab.txt; byte-level BPE and SentencePiece Unigram from tokenizer.json) and the settings in
model_card.json, padding to the model's sequence length, one inference - with numpy and the
runtime only (onnxruntime for .onnx/.ort, ai-edge-litert for .tflite, ExecuTorch's Python runtime
for .pte, whose bindings need torch; an app links ExecuTorch's C++ runtime instead).
No transformers, no edgepipe (and no torch but ExecuTorch's): if this works, the bundle is self-sufficient.

    python3 app_check.py BUNDLE_DIR "a gorgeous, witty, seductive movie."
    python3 app_check.py BUNDLE_DIR --texts texts.txt      # one text per line, prints JSON
    python3 app_check.py BUNDLE_DIR "first text" "second text"   # a pair model (task inputs text_pair)
    python3 app_check.py BUNDLE_DIR --texts texts.txt      # an embedding model: each text's nearest other text
    python3 app_check.py BUNDLE_DIR "Zoë lives in Paris"   # a tagger: words, tags, entities with char offsets
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sys
import unicodedata

import numpy as np


class WordPiece:
    """BERT's basic tokenizer + greedy longest-match WordPiece (as the Task Library and HF do)."""

    def __init__(
        self, vocab_path: str, lowercase: bool = True, strip_accents: bool | None = None, max_chars: int = 100
    ):
        with open(vocab_path, encoding="utf-8") as f:
            self.vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
        self.lowercase = lowercase
        self.strip_accents = lowercase if strip_accents is None else strip_accents
        self.max_chars = max_chars

    @staticmethod
    def _is_punct(ch: str) -> bool:
        cp = ord(ch)
        if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
            return True
        return unicodedata.category(ch).startswith("P")

    @staticmethod
    def _is_cjk(cp: int) -> bool:
        return any(
            lo <= cp <= hi
            for lo, hi in (
                (0x4E00, 0x9FFF),
                (0x3400, 0x4DBF),
                (0x20000, 0x2A6DF),
                (0x2A700, 0x2B73F),
                (0x2B740, 0x2B81F),
                (0x2B820, 0x2CEAF),
                (0xF900, 0xFAFF),
                (0x2F800, 0x2FA1F),
            )
        )

    def _clean(self, text: str) -> str:
        out = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or (unicodedata.category(ch) in ("Cc", "Cf") and ch not in "\t\n\r"):
                continue
            if ch in " \t\n\r" or unicodedata.category(ch) == "Zs":
                out.append(" ")
            elif self._is_cjk(cp):
                out.append(f" {ch} ")
            else:
                out.append(ch)
        return "".join(out)

    def _basic(self, text: str) -> list[str]:
        words = []
        for word in self._clean(text).split():
            if self.lowercase:  # char by char, as `tokenizers` does (str.lower() turns a word-final Σ into ς)
                word = "".join(c.lower() for c in word)
            if self.strip_accents:
                word = "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")
            current = ""
            for ch in word:
                if self._is_punct(ch):
                    if current:
                        words.append(current)
                    words.append(ch)
                    current = ""
                else:
                    current += ch
            if current:
                words.append(current)
        return words

    def _wordpiece(self, word: str) -> list[str]:
        if len(word) > self.max_chars:
            return ["[UNK]"]
        pieces, start = [], 0
        while start < len(word):
            end, piece = len(word), None
            while start < end:
                candidate = ("##" if start else "") + word[start:end]
                if candidate in self.vocab:
                    piece = candidate
                    break
                end -= 1
            if piece is None:
                return ["[UNK]"]
            pieces.append(piece)
            start = end
        return pieces

    def ids(self, text: str) -> list[int]:
        unk = self.vocab["[UNK]"]
        return [self.vocab.get(p, unk) for w in self._basic(text) for p in self._wordpiece(w)]

    @property
    def framing(self) -> Framing:
        cls, sep = self.vocab["[CLS]"], self.vocab["[SEP]"]
        return Framing(
            [(cls, 0), ("A", 0), (sep, 0)], [(cls, 0), ("A", 0), (sep, 0), ("B", 1), (sep, 1)], self.vocab["[PAD]"]
        )

    def encode(self, text: str, seq_len: int, text_b: str | None = None) -> dict[str, np.ndarray]:
        return self.framing(self.ids(text), None if text_b is None else self.ids(text_b), seq_len)


class Framing:
    """Where a tokenizer's special tokens go around one text or a pair (its post-processor's templates:
    items are (token id, type id) or ("A"/"B", type id)), truncation, padding. Truncation is
    `tokenizers`' longest-first: the shorter text keeps all its tokens when the longer one can give up
    enough, otherwise each keeps half of the budget (the second text the odd one)."""

    def __init__(self, single: list[tuple], pair: list[tuple], pad: int):
        self.single, self.pair, self.pad = single, pair, pad

    @staticmethod
    def fit(n_a: int, n_b: int, budget: int) -> tuple[int, int]:
        if n_a + n_b <= budget:
            return n_a, n_b
        short, long_ = sorted((n_a, n_b))
        long_ = short if short > budget else max(short, budget - short)
        if short + long_ > budget:
            short, long_ = budget // 2, budget // 2 + budget % 2
        return (short, long_) if n_a <= n_b else (long_, short)

    def __call__(self, a: list[int], b: list[int] | None, seq_len: int) -> dict[str, np.ndarray]:
        template = self.single if b is None else self.pair
        budget = seq_len - sum(1 for item, _ in template if item not in ("A", "B"))
        if b is None:
            parts = {"A": a[:budget]}
        else:
            n_a, n_b = self.fit(len(a), len(b), budget)
            parts = {"A": a[:n_a], "B": b[:n_b]}
        ids: list[int] = []
        types: list[int] = []
        for item, type_id in template:
            chunk = parts.get(item, [item])
            ids += chunk
            types += [type_id] * len(chunk)
        pad = seq_len - len(ids)
        return {
            "input_ids": np.array([ids + [self.pad] * pad], dtype=np.int64),
            "attention_mask": np.array([[1] * len(ids) + [0] * pad], dtype=np.int64),
            "token_type_ids": np.array([types + [0] * pad], dtype=np.int64),
        }


WHITESPACE = set("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | {
    chr(c) for c in range(0x2000, 0x200B)
}


def _letter(ch: str) -> bool:
    return unicodedata.category(ch)[0] == "L"


def _number(ch: str) -> bool:
    return unicodedata.category(ch)[0] == "N"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte (what byte-level BPE pieces are spelled with)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


# Grapheme_Cluster_Break values that Python's unicodedata cannot derive from the general category
# (UAX #29; Other_Grapheme_Extend, Prepend, the SpacingMark exceptions), for the Precompiled normalizer
OTHER_EXTEND = {0x09BE, 0x09D7, 0x0B3E, 0x0B57, 0x0BBE, 0x0BD7, 0x0CC2, 0x0CD5, 0x0CD6, 0x0D3E, 0x0D57, 0x0DCF}
OTHER_EXTEND |= {0x0DDF, 0x1B35, 0x200C, 0x302E, 0x302F, 0xFF9E, 0xFF9F, 0x1133E, 0x11357, 0x114B0, 0x114BD}
OTHER_EXTEND |= {
    0x115AF,
    0x11930,
    0x1D165,
    *range(0x1D16E, 0x1D173),
    *range(0xE0020, 0xE0080),
    *range(0x1F3FB, 0x1F400),
}
PREPEND = {*range(0x0600, 0x0606), 0x06DD, 0x070F, 0x0890, 0x0891, 0x08E2, 0x0D4E, 0x110BD, 0x110CD, 0x111C2, 0x111C3}
PREPEND |= {0x1193F, 0x11941, 0x11A3A, *range(0x11A84, 0x11A8A), 0x11D46, 0x11F02}
NOT_SPACING = {0x102B, 0x102C, 0x1038, *range(0x1062, 0x1065), *range(0x1067, 0x106E), 0x1083, *range(0x1087, 0x108D)}
NOT_SPACING |= {0x108F, *range(0x109A, 0x109D), 0x1A61, 0x1A63, 0x1A64, 0xAA7B, 0xAA7D, 0x11720, 0x11721}


def _cluster_break(ch: str) -> str:
    cp = ord(ch)
    if ch == "\r" or ch == "\n":
        return ch
    if cp == 0x200D:
        return "ZWJ"
    if cp in PREPEND:
        return "Prepend"
    cat = unicodedata.category(ch)
    if cat in ("Mn", "Me") or cp in OTHER_EXTEND:
        return "Extend"
    if cat in ("Cc", "Zl", "Zp") or cat == "Cf":
        return "Control"
    if (cat == "Mc" and cp not in NOT_SPACING) or cp in (0x0E33, 0x0EB3):
        return "SpacingMark"
    if 0x1100 <= cp <= 0x115F or 0xA960 <= cp <= 0xA97C:
        return "L"
    if 0x1160 <= cp <= 0x11A7 or 0xD7B0 <= cp <= 0xD7C6:
        return "V"
    if 0x11A8 <= cp <= 0x11FF or 0xD7CB <= cp <= 0xD7FB:
        return "T"
    if 0xAC00 <= cp <= 0xD7A3:
        return "LV" if (cp - 0xAC00) % 28 == 0 else "LVT"
    if 0x1F1E6 <= cp <= 0x1F1FF:
        return "RI"
    return "Other"


def graphemes(text: str) -> list[str]:
    """Extended grapheme clusters (UAX #29) as far as the Precompiled normalizer can tell them apart:
    it treats a cluster of 6 UTF-8 bytes or more char by char, so the emoji ZWJ and Indic conjunct
    rules (GB9c, GB11), which only join such long clusters, change nothing and are left out."""
    out: list[str] = []
    prev, run_ri = None, 0
    for ch in text:
        b = _cluster_break(ch)
        join = prev is not None and (
            (prev == "\r" and b == "\n")
            or (
                prev not in ("Control", "\r", "\n")
                and b not in ("Control", "\r", "\n")
                and (
                    b in ("Extend", "ZWJ", "SpacingMark")
                    or prev == "Prepend"
                    or (prev == "L" and b in ("L", "V", "LV", "LVT"))
                    or (prev in ("LV", "V") and b in ("V", "T"))
                    or (prev in ("LVT", "T") and b == "T")
                    or (prev == "RI" and b == "RI" and run_ri % 2 == 1)
                )
            )
        )
        run_ri = run_ri + 1 if b == "RI" else 0
        if join:
            out[-1] += ch
        else:
            out.append(ch)
        prev = b
    return out


class Precompiled:
    """SentencePiece's compiled normalizer (`precompiled_charsmap`: XLM-R's, mBART's, CamemBERT's
    `nmt_nfkc`), applied as `tokenizers` applies it: a darts-clone double-array trie from UTF-8 bytes to
    replacement strings; per grapheme cluster shorter than 6 bytes, the replacement of its *shortest*
    matching prefix replaces the whole cluster; otherwise each character is replaced on its own
    (or kept). Written here because no library reads the format without sentencepiece's C++ runtime."""

    def __init__(self, charsmap_b64: str):
        blob = base64.b64decode(charsmap_b64)
        size = int.from_bytes(blob[:4], "little")
        self.units = np.frombuffer(blob[4 : 4 + size], dtype="<u4").tolist()
        self.normalized = blob[4 + size :]
        self.cache: dict[str, str | None] = {}

    def first_prefix_value(self, key: bytes) -> int | None:
        units = self.units
        unit = units[0]
        pos = (unit >> 10) << ((unit & (1 << 9)) >> 6)
        for c in key:
            if c == 0:
                return None
            pos ^= c
            unit = units[pos] if pos < len(units) else 0
            if unit & ((1 << 31) | 0xFF) != c:
                return None
            pos ^= (unit >> 10) << ((unit & (1 << 9)) >> 6)
            if (unit >> 8) & 1:
                return units[pos] & ((1 << 31) - 1)
        return None

    def transform(self, chunk: str) -> str | None:
        if chunk not in self.cache:
            value = self.first_prefix_value(chunk.encode("utf-8"))
            if value is None:
                self.cache[chunk] = None
            else:
                end = self.normalized.index(b"\0", value)
                self.cache[chunk] = self.normalized[value:end].decode("utf-8")
        return self.cache[chunk]

    def __call__(self, text: str) -> str:
        out = []
        for cluster in graphemes(text):
            whole = self.transform(cluster) if len(cluster.encode("utf-8")) < 6 else None
            if whole is not None:
                out.append(whole)
                continue
            for ch in cluster:
                t = self.transform(ch)
                out.append(ch if t is None else t)
        return "".join(out)


class Normalizer:
    """tokenizer.json's normalizer: Unicode forms, Lowercase, Replace, Strip, SentencePiece's
    Precompiled (one after another in a Sequence); any other type says so instead of guessing."""

    KNOWN = ("NFKC", "NFC", "NFD", "NFKD", "Lowercase", "Replace", "Strip", "Precompiled")

    def __init__(self, node: dict | None):
        self.steps = _flatten(node, "normalizers")
        bad = [n["type"] for n in self.steps if n["type"] not in self.KNOWN]
        if bad:
            raise SystemExit(f"app_check: the {bad[0]} normalizer has no reference here; tokenize with tokenizer.json")
        for n in self.steps:
            if n["type"] == "Precompiled":
                n["map"] = Precompiled(n["precompiled_charsmap"])

    def __call__(self, text: str) -> str:
        for n in self.steps:
            t = n["type"]
            if t == "Precompiled":
                text = n["map"](text)
            elif t in ("NFKC", "NFC", "NFD", "NFKD"):
                text = unicodedata.normalize(t, text)
            elif t == "Lowercase":
                text = text.lower()
            elif t == "Strip":  # DeBERTa's strips the right end only
                if n.get("strip_left", True):
                    text = text.lstrip()
                if n.get("strip_right", True):
                    text = text.rstrip()
            elif t == "Replace":
                pattern = n["pattern"]
                text = (
                    re.sub(pattern["Regex"], n["content"], text)
                    if "Regex" in pattern
                    else text.replace(pattern["String"], n["content"])
                )
        return text


class ByteLevelBPE:
    """RoBERTa's and ModernBERT's tokenizer from tokenizer.json: the normalizer (ModernBERT's NFC), GPT-2's
    pre-tokenizer regex (written out by hand: Python's `re` has no \\p{L}), bytes as printable characters,
    then merges by rank."""

    def __init__(self, tokenizer_json: str, pad_token: str = "<pad>"):
        with open(tokenizer_json, encoding="utf-8") as f:
            j = json.load(f)
        model = j["model"]
        self.vocab = model["vocab"]
        merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        self.ranks = {pair: i for i, pair in enumerate(merges)}
        self.add_prefix_space = bool((j.get("pre_tokenizer") or {}).get("add_prefix_space"))
        self.byte_char = _bytes_to_unicode()
        self.framing = _framing(j, pad_token)
        self.normalize = Normalizer(j.get("normalizer"))

    def split(self, text: str) -> list[str]:
        """`'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+`"""
        out, i, n = [], 0, len(text)
        while i < n:
            if text[i] == "'" and text[i + 1 : i + 3] in ("re", "ve", "ll"):
                out.append(text[i : i + 3])
                i += 3
                continue
            if text[i] == "'" and i + 1 < n and text[i + 1] in "stmd":
                out.append(text[i : i + 2])
                i += 2
                continue
            j = i + 1 if text[i] == " " and i + 1 < n else i
            c = text[j]
            if c not in WHITESPACE:
                k = j + 1
                if _letter(c):
                    while k < n and _letter(text[k]):
                        k += 1
                elif _number(c):
                    while k < n and _number(text[k]):
                        k += 1
                else:
                    while k < n and not (text[k] in WHITESPACE or _letter(text[k]) or _number(text[k])):
                        k += 1
                out.append(text[i:k])
                i = k
                continue
            k = i
            while k < n and text[k] in WHITESPACE:
                k += 1
            if k < n and k - i > 1:
                k -= 1  # \\s+(?!\\S): the last space goes with the word after it
            out.append(text[i:k])
            i = k
        return out

    def bpe(self, word: str) -> list[str]:
        parts = list(word)
        while len(parts) > 1:
            ranked = [(self.ranks.get((a, b), 1 << 62), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            rank, i = min(ranked)
            if rank == 1 << 62:
                break
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        return parts

    def ids(self, text: str) -> list[int]:
        text = self.normalize(text)
        if self.add_prefix_space and not text.startswith(" "):
            text = " " + text
        out = []
        for word in self.split(text):
            mapped = "".join(self.byte_char[b] for b in word.encode("utf-8"))
            out.extend(self.vocab[p] for p in self.bpe(mapped))
        return out

    def encode(self, text: str, seq_len: int, text_b: str | None = None) -> dict[str, np.ndarray]:
        return self.framing(self.ids(text), None if text_b is None else self.ids(text_b), seq_len)


class Unigram:
    """SentencePiece Unigram from tokenizer.json: the normalizer, Metaspace pre-tokenization, then
    the most likely segmentation (Viterbi over piece log-probabilities; unknown characters fuse into
    one <unk>), as `tokenizers` does."""

    def __init__(self, tokenizer_json: str, pad_token: str = "<pad>"):
        with open(tokenizer_json, encoding="utf-8") as f:
            j = json.load(f)
        model = j["model"]
        self.pieces = {p: (i, score) for i, (p, score) in enumerate(model["vocab"])}
        self.unk_id = model.get("unk_id")
        self.max_len = max(len(p) for p in self.pieces)
        self.unk_score = min(score for _, score in self.pieces.values()) - 10.0
        pre = _flatten(j.get("pre_tokenizer"), "pretokenizers")
        meta = next((p for p in pre if p["type"] == "Metaspace"), {"replacement": "\u2581", "prepend_scheme": "always"})
        self.whitespace_split = any(p["type"] == "WhitespaceSplit" for p in pre)
        self.replacement = meta.get("replacement", "\u2581")
        self.prepend = meta.get("prepend_scheme", "always" if meta.get("add_prefix_space", True) else "never")
        self.framing = _framing(j, pad_token)
        self.normalize = Normalizer(j.get("normalizer"))

    def words(self, text: str) -> list[str]:
        if self.whitespace_split:
            chunks = [c for c in "".join(" " if ch in WHITESPACE else ch for ch in text).split(" ") if c]
        else:
            chunks = [text] if text else []
        out = []
        for k, chunk in enumerate(chunks):
            chunk = chunk.replace(" ", self.replacement)
            if (self.prepend == "always" or (self.prepend == "first" and k == 0)) and not chunk.startswith(
                self.replacement
            ):
                chunk = self.replacement + chunk
            start = 0  # split=True: a word starts at each replacement character
            for i in range(1, len(chunk) + 1):
                if i == len(chunk) or chunk[i] == self.replacement:
                    out.append(chunk[start:i])
                    start = i
        return out

    def segment(self, word: str) -> list[int]:
        """Viterbi; a character with no one-character piece also gets an <unk> node scored
        min_score - 10 (`tokenizers`' kUnkPenalty), so any text has a path."""
        n = len(word)
        best: list[tuple[float, int, int | None]] = [(0.0, 0, None)] + [(-float("inf"), 0, None)] * n
        for end in range(1, n + 1):
            for start in range(max(0, end - self.max_len), end):
                hit = self.pieces.get(word[start:end])
                if hit is not None and best[start][0] + hit[1] > best[end][0]:
                    best[end] = (best[start][0] + hit[1], start, hit[0])
            if word[end - 1] not in self.pieces and best[end - 1][0] + self.unk_score > best[end][0]:
                best[end] = (best[end - 1][0] + self.unk_score, end - 1, self.unk_id)
        ids, end = [], n
        while end > 0:
            _, start, i = best[end]
            ids.append(i)
            end = start
        ids.reverse()
        fused: list[int] = []
        for i in ids:  # consecutive unknowns are one <unk>
            if not (i == self.unk_id and fused and fused[-1] == self.unk_id):
                fused.append(i)
        return fused

    def ids(self, text: str) -> list[int]:
        return [i for w in self.words(self.normalize(text)) for i in self.segment(w)]

    def encode(self, text: str, seq_len: int, text_b: str | None = None) -> dict[str, np.ndarray]:
        return self.framing(self.ids(text), None if text_b is None else self.ids(text_b), seq_len)


def _flatten(node: dict | None, key: str) -> list[dict]:
    if not node:
        return []
    if node.get("type") == "Sequence":
        return [x for child in node.get(key, []) for x in _flatten(child, key)]
    return [node]


def _template(processor: dict, template: list[dict]) -> list[tuple]:
    """A TemplateProcessing template as (id or "A"/"B", type id) items (a special token may be several ids)."""
    out = []
    for x in template:
        if "Sequence" in x:
            out.append((x["Sequence"]["id"], x["Sequence"]["type_id"]))
        else:
            special = x["SpecialToken"]
            out += [(i, special["type_id"]) for i in processor["special_tokens"][special["id"]]["ids"]]
    return out


def _framing(j: dict, pad_token: str) -> Framing:
    """The templates of tokenizer.json's post-processor: RobertaProcessing (RoBERTa, XLM-R:
    <s> A </s></s> B </s>), BertProcessing, TemplateProcessing (DeBERTa-v2, ModernBERT: [CLS] A [SEP]
    B [SEP]); without one, <s> A </s>. The padding id is the card's pad token's."""
    added = {t["content"]: t["id"] for t in j.get("added_tokens", [])}
    vocab = j["model"]["vocab"]
    index = vocab if isinstance(vocab, dict) else {piece: i for i, (piece, _) in enumerate(vocab)}
    pad = added.get(pad_token, index.get(pad_token))
    cls, sep = added.get("<s>", index.get("<s>")), added.get("</s>", index.get("</s>"))
    single = [(cls, 0), ("A", 0), (sep, 0)]
    pair = [(cls, 0), ("A", 0), (sep, 0), (sep, 0), ("B", 0), (sep, 0)]
    for p in _flatten(j.get("post_processor"), "processors"):
        if p["type"] == "RobertaProcessing":
            cls, sep = p["cls"][1], p["sep"][1]
            single = [(cls, 0), ("A", 0), (sep, 0)]
            pair = [(cls, 0), ("A", 0), (sep, 0), (sep, 0), ("B", 0), (sep, 0)]
        elif p["type"] == "BertProcessing":
            cls, sep = p["cls"][1], p["sep"][1]
            single = [(cls, 0), ("A", 0), (sep, 0)]
            pair = [(cls, 0), ("A", 0), (sep, 0), ("B", 1), (sep, 1)]
        elif p["type"] == "TemplateProcessing":
            single, pair = _template(p, p["single"]), _template(p, p["pair"])
    return Framing(single, pair, pad)


class Model:
    def __init__(self, path: str):
        self.ort = self.tfl = self.method = None
        if path.endswith(".pte"):
            import executorch.kernels.quantized  # noqa: F401  (the quantized embedding kernels)
            import torch
            from executorch.runtime import Runtime

            self.torch = torch
            self.program = Runtime.get().load_program(path)  # kept: its methods point into it
            self.method = self.program.load_method("forward")
            self.n_inputs = self.program.metadata("forward").num_inputs()
        elif path.endswith(".tflite"):
            from ai_edge_litert.interpreter import Interpreter

            self.tfl = Interpreter(path, num_threads=1)
            self.tfl.allocate_tensors()
            self.inputs = sorted(self.tfl.get_input_details(), key=lambda d: d["name"])
            self.output = self.tfl.get_output_details()[0]
            # edgepipe's length signatures: seq_N takes [1, N]; a text runs through the shortest that holds it
            self.buckets = sorted(
                (int(k[4:]), k) for k in self.tfl.get_signature_list() if k.startswith("seq_") and k[4:].isdigit()
            )
        else:
            import onnxruntime as ort

            self.ort = ort.InferenceSession(path, providers=["CPUExecutionProvider"])

    def logits(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        if self.method is not None:
            names = ("input_ids", "attention_mask", "token_type_ids")[: self.n_inputs]
            tensors = [self.torch.from_numpy(np.ascontiguousarray(feeds[n], dtype=np.int64)) for n in names]
            return self.method.execute(tensors)[0].numpy()[0]
        if self.ort is not None:
            names = [i.name for i in self.ort.get_inputs()]
            return self.ort.run(None, {n: feeds[n] for n in names})[0][0]
        names = ("input_ids", "attention_mask", "token_type_ids")[: len(self.inputs)]  # args_0, 1, (2)
        tokens = int(feeds["attention_mask"].sum())
        bucket = next(((n, k) for n, k in self.buckets if n >= tokens), None)
        if bucket is not None:
            n, key = bucket
            runner = self.tfl.get_signature_runner(key)
            details = runner.get_input_details()
            out = runner(**{a: feeds[f][:, :n].astype(details[a]["dtype"]) for a, f in zip(sorted(details), names)})
            return out[sorted(out)[0]][0]
        for detail, name in zip(self.inputs, names):
            self.tfl.set_tensor(detail["index"], feeds[name].astype(detail["dtype"]))
        self.tfl.invoke()
        out = self.tfl.get_tensor(self.output["index"])[0]
        scale, zero_point = self.output.get("quantization", (0.0, 0))
        if out.dtype != np.float32 and scale:  # an int8 output (bundles before edgepipe dequantized in the graph)
            out = (out.astype(np.float32) - zero_point) * scale
        return out


def load_tokenizer(directory: str, tok: dict):
    """The reference tokenizer of the card's family."""
    if tok["type"] == "bert_wordpiece":
        return WordPiece(os.path.join(directory, tok["vocab"]), tok["lowercase"], tok.get("strip_accents"))
    family = {"byte_level_bpe": ByteLevelBPE, "sentencepiece_unigram": Unigram}.get(tok["type"])
    if family is None:
        raise SystemExit(f"app_check: tokenizer type {tok['type']!r} is unknown to this app_check.py")
    return family(os.path.join(directory, tok["tokenizer_json"]), tok.get("pad") or "<pad>")


def load_bundle(directory: str) -> tuple[dict, WordPiece, Model]:
    with open(os.path.join(directory, "model_card.json"), encoding="utf-8") as f:
        card = json.load(f)
    tokenizer = load_tokenizer(directory, card["tokenizer"])
    # a TFLite model with length signatures may lie in its own file (MediaPipe loads one-signature models only)
    model_file = card.get("length_signatures", {}).get("file") or card["model"]["file"]
    return card, tokenizer, Model(os.path.join(directory, model_file))


def classify(card: dict, tokenizer, model: Model, text: str, text_b: str | None = None) -> dict:
    if card.get("task", {}).get("name") == "token_classification":
        return tag(card, tokenizer, model, text)
    feeds = tokenizer.encode(text, card["max_sequence_length"], text_b)
    z = model.logits(feeds).astype(np.float64)
    if card.get("task", {}).get("name") == "embedding":  # L2-normalised in the model: cosine = dot product
        return {"embedding": [float(x) for x in z]}
    if card.get("task", {}).get("name") == "multi_label":  # every label whose output is above 0
        p = 1 / (1 + np.exp(-z))
        on = [int(k) for k in np.flatnonzero(z > 0)]
        return {"labels": [card["labels"][k] for k in on], "indices": on, "scores": [float(p[k]) for k in on]}
    p = np.exp(z - z.max())
    p /= p.sum()
    k = int(p.argmax())
    return {"label": card["labels"][k], "index": k, "score": float(p[k])}


def search(card: dict, tokenizer, model: Model, texts_file: str) -> None:
    """Semantic search over the file's texts, as an app would run it: embed each text, then for each
    its most similar other text by cosine (a dot product: the model's embeddings are L2-normalised)."""
    with open(texts_file, encoding="utf-8") as f:
        texts = [line.rstrip("\n") for line in f]
    e = np.array([classify(card, tokenizer, model, t)["embedding"] for t in texts])
    sims = e @ e.T
    np.fill_diagonal(sims, -np.inf)
    for i in range(len(texts)):
        j = int(sims[i].argmax())
        print(json.dumps({"nearest": j, "cosine": float(sims[i, j]), "norm": float(np.linalg.norm(e[i]))}))


WORD = re.compile(r"\w+|[^\w\s]")  # an app's words: runs of letters/digits, or one punctuation mark


def words_of(text: str) -> list[tuple[str, int, int]]:
    """The words of a text with their character offsets (what entity spans map back through)."""
    return [(m.group(), m.start(), m.end()) for m in WORD.finditer(text)]


def word_pieces(tokenizer, word: str) -> list[int]:
    """One word's ids as `tokenizers` makes them for pre-split words (each word pre-tokenized alone;
    byte-level BPE with a prefix space, as add_prefix_space=True does)."""
    if isinstance(tokenizer, ByteLevelBPE):
        return tokenizer.ids(" " + word)
    return tokenizer.ids(word)


def tag(card: dict, tokenizer, model: Model, text: str) -> dict:
    """Token classification as an app runs it: split the text into words, tokenize them, tag each word by
    its first sub-word, then turn BIO tags into entities with character offsets into the original text."""
    seq_len = card["max_sequence_length"]
    words = words_of(text)
    ids, first = [], []
    for w, _, _ in words:
        pieces = word_pieces(tokenizer, w)
        first.append(len(ids) if pieces else None)  # a word of marks the tokenizer strips has no token
        ids += pieces
    feeds = tokenizer.framing(ids, None, seq_len)
    lead = next(i for i, (item, _) in enumerate(tokenizer.framing.single) if item == "A")  # specials before
    kept = int(feeds["attention_mask"].sum()) - (len(tokenizer.framing.single) - 1)  # sub-words that fit
    z = model.logits(feeds)
    labels = card["labels"]
    tags = [labels[int(z[lead + p].argmax())] if p is not None and p < kept else "O" for p in first]
    entities, start, kind = [], None, ""
    for i, t in enumerate([*tags, "O"]):
        if start is not None and (t == "O" or t.startswith("B-") or t[2:] != kind):
            a, b = words[start][1], words[i - 1][2]
            entities.append({"type": kind, "start": a, "end": b, "text": text[a:b]})
            start = None
        if t != "O" and start is None:
            start, kind = i, t[2:]
    return {"words": [w for w, _, _ in words], "tags": tags, "entities": entities}


def pair_task(card: dict) -> bool:
    return card.get("task", {}).get("inputs") == "text_pair"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("text", nargs="?")
    ap.add_argument("text_b", nargs="?", help="the second text, for a pair model")
    ap.add_argument(
        "--texts", help="file with one text per line (pairs: the two texts separated by a tab); prints JSON lines"
    )
    args = ap.parse_args(argv)
    card, tokenizer, model = load_bundle(args.bundle)
    pairs = pair_task(card)
    if args.texts and card.get("task", {}).get("name") == "embedding":
        search(card, tokenizer, model, args.texts)
    elif args.texts:
        with open(args.texts, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                line = line.rstrip("\n")
                if pairs:
                    if "\t" not in line:
                        raise SystemExit(
                            f"app_check: {args.texts} line {n} has no tab; a pair model takes TEXT<tab>TEXT_B"
                        )
                    a, b = line.split("\t", 1)
                    print(json.dumps(classify(card, tokenizer, model, a, b)))
                else:
                    print(json.dumps(classify(card, tokenizer, model, line)))
    elif args.text is not None:
        if pairs and args.text_b is None:
            ap.error("this bundle's model takes a pair of texts: give TEXT TEXT_B")
        print(json.dumps(classify(card, tokenizer, model, args.text, args.text_b if pairs else None)))
    else:
        ap.error("give a text (a pair: two texts) or --texts FILE")
    return 0


if __name__ == "__main__":
    sys.exit(main())
