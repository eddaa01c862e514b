#!/usr/bin/env python3
"""App-side check of an edgepipe bundle: text in, label out, from the bundle folder alone.

Does what a mobile app does - BERT WordPiece tokenization with the shipped vocab.txt and
the settings in model_card.json, padding to the model's sequence length, one inference -
with numpy and the runtime only (onnxruntime for .onnx/.ort, ai-edge-litert for .tflite).
No torch, no transformers, no edgepipe: if this works, the bundle is self-sufficient.

    python3 app_check.py BUNDLE_DIR "a gorgeous, witty, seductive movie."
    python3 app_check.py BUNDLE_DIR --texts texts.txt      # one text per line, prints JSON
"""

from __future__ import annotations

import argparse
import json
import os
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
            if self.lowercase:
                word = word.lower()
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

    def encode(self, text: str, seq_len: int) -> dict[str, np.ndarray]:
        tokens = [p for w in self._basic(text) for p in self._wordpiece(w)][: seq_len - 2]
        ids = [self.vocab["[CLS]"], *(self.vocab.get(t, self.vocab["[UNK]"]) for t in tokens), self.vocab["[SEP]"]]
        mask = [1] * len(ids)
        pad = seq_len - len(ids)
        return {
            "input_ids": np.array([ids + [self.vocab["[PAD]"]] * pad], dtype=np.int64),
            "attention_mask": np.array([mask + [0] * pad], dtype=np.int64),
            "token_type_ids": np.zeros((1, seq_len), dtype=np.int64),
        }


class Model:
    def __init__(self, path: str):
        if path.endswith(".tflite"):
            from ai_edge_litert.interpreter import Interpreter

            self.tfl = Interpreter(path, num_threads=1)
            self.tfl.allocate_tensors()
            self.inputs = sorted(self.tfl.get_input_details(), key=lambda d: d["name"])
            self.output = self.tfl.get_output_details()[0]
            self.ort = None
        else:
            import onnxruntime as ort

            self.ort = ort.InferenceSession(path, providers=["CPUExecutionProvider"])

    def logits(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        if self.ort is not None:
            names = [i.name for i in self.ort.get_inputs()]
            return self.ort.run(None, {n: feeds[n] for n in names})[0][0]
        for detail, name in zip(self.inputs, ("input_ids", "attention_mask", "token_type_ids")):
            self.tfl.set_tensor(detail["index"], feeds[name].astype(detail["dtype"]))
        self.tfl.invoke()
        out = self.tfl.get_tensor(self.output["index"])[0]
        scale, zero_point = self.output.get("quantization", (0.0, 0))
        if out.dtype != np.float32 and scale:  # an int8 output (bundles before edgepipe dequantized in the graph)
            out = (out.astype(np.float32) - zero_point) * scale
        return out


def load_bundle(directory: str) -> tuple[dict, WordPiece, Model]:
    with open(os.path.join(directory, "model_card.json"), encoding="utf-8") as f:
        card = json.load(f)
    tok = card["tokenizer"]
    wordpiece = WordPiece(os.path.join(directory, tok["vocab"]), tok["lowercase"], tok.get("strip_accents"))
    return card, wordpiece, Model(os.path.join(directory, card["model"]["file"]))


def classify(card: dict, wordpiece: WordPiece, model: Model, text: str) -> dict:
    feeds = wordpiece.encode(text, card["max_sequence_length"])
    z = model.logits(feeds).astype(np.float64)
    p = np.exp(z - z.max())
    p /= p.sum()
    k = int(p.argmax())
    return {"label": card["labels"][k], "index": k, "score": float(p[k])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("text", nargs="?")
    ap.add_argument("--texts", help="file with one text per line; prints one JSON line per text")
    args = ap.parse_args(argv)
    card, wordpiece, model = load_bundle(args.bundle)
    if args.texts:
        with open(args.texts, encoding="utf-8") as f:
            for line in f:
                print(json.dumps(classify(card, wordpiece, model, line.rstrip("\n"))))
    elif args.text is not None:
        print(json.dumps(classify(card, wordpiece, model, args.text)))
    else:
        ap.error("give a text or --texts FILE")
    return 0


if __name__ == "__main__":
    sys.exit(main())
