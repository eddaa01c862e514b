"""The bundle's dependency-free reference tokenizers (devices/standalone/app_check.py) give the ids
Hugging Face `tokenizers` gives, for every tokenizer family edgepipe ships, before and after the
vocabulary is pruned: 0 mismatches on >= 5,000 texts with accents, CJK, emoji and long words."""

from __future__ import annotations

import base64
import random
from pathlib import Path

import pytest
from tiny_models import corpus, make_tiny, nmt_nfkc_charsmap

from conftest import make_tiny_bert
from edgepipe.arch import ARCHITECTURES
from edgepipe.devices.standalone import app_check
from edgepipe.export.bundle import preprocessor_gap
from edgepipe.model.load import Tokenizer

# an architecture of each tokenizer the references must match -> its family (XLM-R's and DeBERTa's
# Unigram tokenizers differ in normalizer, pre-tokenizer and template, RoBERTa's and ModernBERT's BPE
# in normalizer, template and where the special tokens sit: each is checked)
TOKENIZERS = {
    "bert": "bert_wordpiece",
    "roberta": "byte_level_bpe",
    "modernbert": "byte_level_bpe",
    "xlm-roberta": "sentencepiece_unigram",
    "deberta-v2": "sentencepiece_unigram",
}
SCRIPTS = [
    (0x41, 0x7A),
    (0xC0, 0x17F),
    (0x391, 0x3C9),
    (0x410, 0x44F),
    (0x4E00, 0x4FFF),
    (0x3041, 0x30FF),
    (0xAC00, 0xAD00),
    (0x1F300, 0x1F64F),
    (0x30, 0x39),
]


# characters that join the one before them into one grapheme cluster (combining accents, kana voicing,
# a Devanagari vowel sign, ZWJ, an emoji skin tone, a variation selector), and bases they rarely meet
MARKS = [chr(c) for c in range(0x300, 0x370)] + ["\u3099", "\u20d0", "\ufe0f", "\u200d", "\U0001f3fb", "\u093e"]
BASES = [
    chr(c)
    for r in ((0x41, 0x7A), (0xFF01, 0xFF5E), (0x2460, 0x24FF), (0x1100, 0x11FF), (0xAC00, 0xAC40))
    for c in range(*r)
]


def texts(n_synthetic: int = 1200, n_clusters: int = 600) -> list[str]:
    """The corpus (Rotten Tomatoes snippets) plus words drawn from nine scripts, digits, emoji,
    punctuation, odd whitespace and 40-character words, plus texts of grapheme clusters: letters,
    fullwidth forms, circled numbers and Hangul jamo under combining marks, CR LF."""
    rng = random.Random(0)
    out = corpus(4000)
    for _ in range(n_clusters):
        clusters = [
            rng.choice(BASES + ["\r\n", "\t", " ", "\u00a0"]) + "".join(rng.choices(MARKS, k=rng.choice([0, 1, 1, 2])))
            for _ in range(rng.randint(1, 8))
        ]
        out.append("".join(clusters))
    for _ in range(n_synthetic):
        words = []
        for _ in range(rng.randint(1, 8)):
            lo, hi = rng.choice(SCRIPTS)
            words.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.choice([1, 2, 5, 12, 40]))))
            words.append(rng.choice([" ", "  ", "\t", ", ", "'s ", " - ", "\u3000", "! "]))
        out.append("".join(words))
    return out


@pytest.fixture(scope="module", params=sorted(TOKENIZERS))
def family(request, tmp_path_factory):
    model_type = request.param
    d = tmp_path_factory.mktemp(model_type)
    directory = make_tiny_bert(d / "m") if model_type == "bert" else make_tiny(model_type, d / "m")
    return TOKENIZERS[model_type], ARCHITECTURES[model_type], Tokenizer.load(directory), d


# architecture -> its tokenizer family (the family's test above covers it)
FAMILY_OF = {
    "bert": "bert_wordpiece",
    "distilbert": "bert_wordpiece",
    "electra": "bert_wordpiece",
    "roberta": "byte_level_bpe",
    "xlm-roberta": "sentencepiece_unigram",
    "deberta-v2": "sentencepiece_unigram",
    "modernbert": "byte_level_bpe",
}


def test_every_architectures_tokenizer_family_has_a_reference():
    assert set(FAMILY_OF) == set(ARCHITECTURES), "name the tokenizer family of each architecture in FAMILY_OF"
    assert set(FAMILY_OF.values()) <= set(TOKENIZERS.values())


def reference_ids(tok, card: dict, directory: Path, text: str) -> list[int]:
    return tok.ids(text)


@pytest.mark.parametrize("pruned", [False, True], ids=["full", "pruned"])
def test_the_reference_tokenizer_gives_the_ids_of_hugging_face(family, pruned):
    name, arch, tokenizer, d = family
    sample = texts()
    hf, directory = tokenizer.hf, tokenizer.directory
    if pruned:
        directory = d / "pruned"
        if not directory.exists():
            arch.prune_vocabulary(hf, sample[:500], tokenizer.directory, directory)
        hf = Tokenizer.load(directory).hf if (directory / "config.json").exists() else _load(directory)
    card = arch.tokenizer_card(hf, directory)
    assert card["type"] == name
    # MediaPipe's BERT preprocessor: WordPiece with segment ids only (it frames with [CLS]/[SEP], pads with 0)
    assert (preprocessor_gap(card, arch.input_names) is None) == (name == "bert_wordpiece")
    reference = app_check.load_tokenizer(str(directory), card)
    assert len(sample) >= 5000
    expected = hf(sample, add_special_tokens=False)["input_ids"]
    bad = [t for t, ids in zip(sample, expected) if ids != reference_ids(reference, card, directory, t)]
    assert not bad, f"{len(bad)} of {len(sample)} differ, e.g. {bad[0]!r}"
    # the framed ids (specials, padding) an app feeds equal the pipeline's
    enc = hf(sample[:50], padding="max_length", truncation=True, max_length=32, return_token_type_ids=True)
    for i, t in enumerate(sample[:50]):
        assert reference.encode(t, 32)["input_ids"][0].tolist() == enc["input_ids"][i]


def test_the_reference_frames_pairs_as_hugging_face_does(family):
    """Pair tasks: the tokenizer's pair template (specials, segment ids) and longest-first truncation;
    pairs of every length mix (both short, one long, both long, equal lengths, odd budgets)."""
    name, arch, tokenizer, d = family
    card = arch.tokenizer_card(tokenizer.hf, tokenizer.directory)
    reference = app_check.load_tokenizer(str(tokenizer.directory), card)
    rng = random.Random(1)
    sample = texts(n_synthetic=200, n_clusters=50)
    pairs = [(rng.choice(sample), rng.choice(sample)) for _ in range(400)]
    pairs += [(a, a) for a in sample[:20]]  # equal lengths: the tie goes the way tokenizers breaks it
    for max_length in (16, 31, 64):
        enc = tokenizer.hf(
            [a for a, _ in pairs],
            [b for _, b in pairs],
            padding="max_length",
            truncation="longest_first",
            max_length=max_length,
            return_token_type_ids=True,
        )
        truncated = 0
        for i, (a, b) in enumerate(pairs):
            ours = reference.encode(a, max_length, b)
            for key in ("input_ids", "attention_mask", "token_type_ids"):
                if key in arch.input_names:
                    assert ours[key][0].tolist() == enc[key][i], (key, max_length, a, b)
            truncated += sum(enc["attention_mask"][i]) == max_length
        assert truncated > 50  # truncation is exercised, not only padding


def test_the_reference_tokenizes_an_apps_words_as_hugging_face_does_pre_split_words(family):
    """Token classification: the app splits a text into words (with character offsets) and tokenizes
    each word alone; the ids and each word's first sub-word equal `tokenizers`' `is_split_into_words`
    (WordPiece and SentencePiece; byte-level BPE is refused for this task)."""
    name, arch, tokenizer, d = family
    if name == "byte_level_bpe":  # refused in one line, not tokenized differently from the app
        from edgepipe.errors import ModelError
        from edgepipe.pipeline.data import _tokenize_words

        with pytest.raises(ModelError, match="byte-level BPE tokenizer .* is not supported yet"):
            _tokenize_words(tokenizer.hf, [("Zoë", "visited", "Oslo")], [(1, 0, 3)], 16)
        return
    card = arch.tokenizer_card(tokenizer.hf, tokenizer.directory)
    reference = app_check.load_tokenizer(str(tokenizer.directory), card)
    sample = texts(n_synthetic=300, n_clusters=100)[3800:]  # corpus tail, scripts, clusters
    checked = 0
    for text in sample:
        words = app_check.words_of(text)
        if not words:
            continue
        assert all(text[a:b] == w for w, a, b in words)  # offsets point into the original text
        enc = tokenizer.hf([w for w, _, _ in words], is_split_into_words=True, add_special_tokens=False)
        ours, first = [], []
        for w, _, _ in words:
            pieces = app_check.word_pieces(reference, w)
            first.append(len(ours) if pieces else None)  # a word of stripped marks has no token
            ours += pieces
        assert ours == enc["input_ids"], text
        word_ids = enc.word_ids()
        assert first == [word_ids.index(i) if i in word_ids else None for i in range(len(words))], text
        checked += 1
    assert checked > 500


def _load(directory: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)


@pytest.mark.parametrize("collapse_spaces", [False, True], ids=["precompiled", "precompiled+replace"])
def test_the_precompiled_normaliser_equals_tokenizers_per_grapheme_cluster(collapse_spaces):
    """SentencePiece's compiled `nmt_nfkc` map, alone (transformers 5's XLM-R) and followed by
    Replace(" {2,}", " ") (older conversions): the same normalised text as `tokenizers`, also where
    normalising char by char would not be (composition under combining marks, a fullwidth letter
    swallowing its mark)."""
    from tokenizers import Regex, normalizers

    charsmap = nmt_nfkc_charsmap()
    steps = [normalizers.Precompiled(charsmap)]
    spec = [{"type": "Precompiled", "precompiled_charsmap": base64.b64encode(charsmap).decode()}]
    if collapse_spaces:
        steps.append(normalizers.Replace(Regex(" {2,}"), " "))
        spec.append({"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "})
    hf = normalizers.Sequence(steps)
    ours = app_check.Normalizer({"type": "Sequence", "normalizers": spec})
    sample = texts(n_clusters=3000)
    assert [ours(t) for t in sample] == [hf.normalize_str(t) for t in sample]
    char_by_char = app_check.Precompiled(spec[0]["precompiled_charsmap"])
    differs = sum(hf.normalize_str(t) != "".join(char_by_char.transform(c) or c for c in t) for t in sample)
    assert differs > 300  # the clusters are what is tested


def test_a_normaliser_without_a_reference_is_named_not_guessed():
    with pytest.raises(SystemExit) as e:
        app_check.Normalizer({"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "ByteLevel"}]})
    assert "ByteLevel normalizer has no reference" in str(e.value) and "\n" not in str(e.value)
