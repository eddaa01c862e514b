"""Prune stage: remove whole heads, FFN neurons, layers and unused vocabulary; then recover.

Importance (Michel et al. 2019, "Are Sixteen Heads Really Better than One?"): a gate
of ones multiplies each head's output and each FFN neuron; the expected |dL/dgate|
over training batches (L = the distillation loss) says how much the loss would move
if that unit were removed. Scores are L2-normalised per layer, then ranked globally,
so a layer may lose more heads than another - or all of them (see edgepipe.surgery).
`magnitude` (weight norms) is the data-free alternative.

Vocabulary: the word-embedding table is most of a small student. Kept: every token the
training corpus uses, the special tokens, and every single-character piece with its
`##` form, so any word still splits into known pieces instead of [UNK]. The reduced
vocab.txt ships with the model; the app-side tokenizer then produces the new ids.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgepipe.config import PruneConfig, RunConfig
from edgepipe.errors import ConfigError
from edgepipe.modeling import Classifier
from edgepipe.progress import Progress, Silent
from edgepipe.surgery import ffn_count, head_count, keep_heads, keep_layers, keep_neurons, keep_tokens, shape_of
from edgepipe.pipeline.data import TokenizedSplit
from edgepipe.pipeline.distill import DistillationLoss
from edgepipe.pipeline.train import TrainSettings, batches, fit, seed_everything


# -- importance ---------------------------------------------------------------


class Gates:
    """Multiplicative gates on head outputs and FFN neurons, installed as forward pre-hooks."""

    def __init__(self, model: Classifier, heads: list[torch.Tensor] | None = None, ffn: list[torch.Tensor] | None = None):
        layers = model.encoder.encoder.layer
        self.heads = heads or [torch.ones(head_count(l)) for l in layers]
        self.ffn = ffn or [torch.ones(ffn_count(l)) for l in layers]
        self._handles = []
        for layer, hg, fg in zip(layers, self.heads, self.ffn):
            if head_count(layer):
                d = layer.attention.self.attention_head_size
                self._handles.append(
                    layer.attention.output.dense.register_forward_pre_hook(lambda m, a, g=hg, d=d: (a[0] * g.repeat_interleave(d),))
                )
            if ffn_count(layer):
                self._handles.append(layer.output.dense.register_forward_pre_hook(lambda m, a, g=fg: (a[0] * g,)))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()

    def __enter__(self) -> "Gates":
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def taylor_importance(
    model: Classifier,
    train: TokenizedSplit,
    teacher_logits: torch.Tensor,
    loss_mod: DistillationLoss,
    n_batches: int,
    batch_size: int,
    seed: int,
    progress: Progress = Silent(),
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """E|dL/dgate| per head and per FFN neuron, over `n_batches` shuffled training batches."""
    seed_everything(seed)
    model.eval()  # no dropout: the scores describe the deployed function
    requires = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    layers = model.encoder.encoder.layer
    gates = Gates(model, [torch.ones(head_count(l), requires_grad=True) for l in layers], [torch.ones(ffn_count(l), requires_grad=True) for l in layers])
    head_acc = [torch.zeros_like(g) for g in gates.heads]
    ffn_acc = [torch.zeros_like(g) for g in gates.ffn]
    order = np.random.default_rng(seed).permutation(len(train))[: n_batches * batch_size]
    total = math.ceil(len(order) / batch_size)
    try:
        with gates:
            for idx, b in progress.track(batches(train, batch_size, order), total, "importance (Taylor)"):
                logits = model(b["input_ids"], b["attention_mask"], b["token_type_ids"])
                loss = loss_mod(logits, teacher_logits[torch.from_numpy(idx)], b["labels"])["loss"]
                grads = torch.autograd.grad(loss, [*gates.heads, *gates.ffn], allow_unused=True)
                for acc, g in zip([*head_acc, *ffn_acc], grads):
                    if g is not None:
                        acc += g.abs()
    finally:
        for p, r in zip(model.parameters(), requires):
            p.requires_grad_(r)
    return [a.numpy() / total for a in head_acc], [a.numpy() / total for a in ffn_acc]


def magnitude_importance(model: Classifier) -> tuple[list[np.ndarray], list[np.ndarray]]:
    heads, ffn = [], []
    for layer in model.encoder.encoder.layer:
        n = head_count(layer)
        if n:
            sa, o = layer.attention.self, layer.attention.output.dense
            d = sa.attention_head_size
            w = torch.cat([sa.query.weight, sa.key.weight, sa.value.weight, o.weight.T], dim=1)  # [n*d, 4*hidden]
            heads.append(w.detach().reshape(n, d, -1).norm(dim=(1, 2)).numpy())
        else:
            heads.append(np.zeros(0, dtype=np.float32))
        f = ffn_count(layer)
        if f:
            ffn.append((layer.intermediate.dense.weight.detach().norm(dim=1) * layer.output.dense.weight.detach().norm(dim=0)).numpy())
        else:
            ffn.append(np.zeros(0, dtype=np.float32))
    return heads, ffn


# -- selection ----------------------------------------------------------------


def _normalised(scores: list[np.ndarray]) -> list[np.ndarray]:
    return [s / (np.linalg.norm(s) + 1e-12) if s.size else s for s in scores]


def _keep_top(scores: list[np.ndarray], remove_fraction: float) -> list[list[int]]:
    """Global ranking of per-layer-normalised scores; the lowest `remove_fraction` go."""
    flat = [(float(v), li, i) for li, s in enumerate(_normalised(scores)) for i, v in enumerate(s)]
    n_remove = int(round(remove_fraction * len(flat)))
    removed = {(li, i) for _, li, i in sorted(flat)[:n_remove]}
    return [[i for i in range(len(s)) if (li, i) not in removed] for li, s in enumerate(scores)]


def non_embedding_params(hidden: int, head_dim: int, heads: list[int], ffn: list[int]) -> int:
    """Attention (Q,K,V,O + biases) and FFN parameters, LayerNorms included."""
    total = 0
    for h, f in zip(heads, ffn):
        w = h * head_dim
        total += 4 * hidden * w + 3 * w + hidden + 2 * hidden  # QKV+O weights, QKV bias, O bias, LayerNorm
        total += 2 * hidden * f + f + hidden + 2 * hidden
    return total


def select(
    head_scores: list[np.ndarray], ffn_scores: list[np.ndarray], cfg: PruneConfig, hidden: int, head_dim: int
) -> dict[str, Any]:
    """Which layers, heads and neurons survive."""
    n_layers = len(head_scores)
    layer_score = [float(h.sum() + f.sum()) for h, f in zip(head_scores, ffn_scores)]
    kept_layers = sorted(np.argsort(layer_score)[cfg.layers :].tolist()) if cfg.layers else list(range(n_layers))
    hs = [head_scores[i] for i in kept_layers]
    fs = [ffn_scores[i] for i in kept_layers]
    head_ratio, ffn_ratio = cfg.heads, cfg.ffn
    if cfg.target_params is not None:
        lo, hi = 0.0, 0.99
        if non_embedding_params(hidden, head_dim, [len(k) for k in _keep_top(hs, hi)], [len(k) for k in _keep_top(fs, hi)]) > cfg.target_params:
            raise ConfigError(f"prune.target_params={cfg.target_params} is below what 99% pruning reaches; raise it")
        for _ in range(40):
            mid = (lo + hi) / 2
            p = non_embedding_params(hidden, head_dim, [len(k) for k in _keep_top(hs, mid)], [len(k) for k in _keep_top(fs, mid)])
            lo, hi = (mid, hi) if p > cfg.target_params else (lo, mid)
        head_ratio = ffn_ratio = hi
    heads, ffn = _keep_top(hs, head_ratio), _keep_top(fs, ffn_ratio)
    if sum(map(len, heads)) == 0:
        raise ConfigError(f"pruning would remove every attention head (ratio {head_ratio:.2f}); lower prune.heads")
    if sum(map(len, ffn)) == 0:
        raise ConfigError(f"pruning would remove every FFN neuron (ratio {ffn_ratio:.2f}); lower prune.ffn")
    return {"layers": kept_layers, "heads": heads, "ffn": ffn, "head_ratio": head_ratio, "ffn_ratio": ffn_ratio}


def apply_plan(model: Classifier, plan: dict[str, Any]) -> Classifier:
    """A physically smaller copy: removed rows/columns are gone, not zeroed."""
    pruned = copy.deepcopy(model)
    keep_layers(pruned.encoder, plan["layers"])
    for layer, heads, ffn in zip(pruned.encoder.encoder.layer, plan["heads"], plan["ffn"]):
        keep_heads(layer, heads)
        keep_neurons(layer, ffn)
    return pruned


# -- vocabulary ---------------------------------------------------------------


def read_vocab(directory: Path) -> list[str]:
    return (Path(directory) / "vocab.txt").read_text(encoding="utf-8").splitlines()


def corpus_token_ids(tokenizer: Any, texts: list[str], vocab: list[str]) -> list[int]:
    """Old ids to keep: corpus tokens, special tokens, single characters and their ## forms."""
    used: set[int] = set()
    for start in range(0, len(texts), 1024):
        for ids in tokenizer(texts[start : start + 1024], add_special_tokens=False)["input_ids"]:
            used.update(ids)
    used.update(tokenizer.all_special_ids)
    used.update(i for i, t in enumerate(vocab) if len(t) == 1 or (t.startswith("##") and len(t) == 3))
    return sorted(used)


def write_vocab_tokenizer(directory: Path, vocab: list[str], source_tokenizer: Any) -> Any:
    """vocab.txt (for apps and the Task Library) + tokenizer.json with the same normalisation."""
    from transformers import BertTokenizer

    from edgepipe.rundir import write_bytes_atomic

    directory.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(directory / "vocab.txt", ("\n".join(vocab) + "\n").encode("utf-8"))
    tok = BertTokenizer(
        vocab={token: i for i, token in enumerate(vocab)},
        do_lower_case=getattr(source_tokenizer, "do_lower_case", True),
        model_max_length=source_tokenizer.model_max_length,
    )
    tok.save_pretrained(str(directory))
    return tok


def corpus_vocabulary(tokenizer: Any, texts: list[str], source: Path, directory: Path) -> tuple[list[int], list[str], Any]:
    """(kept old ids, the full vocabulary, a tokenizer of the kept vocabulary written to `directory`)."""
    vocab = read_vocab(source)
    keep = corpus_token_ids(tokenizer, texts, vocab)
    return keep, vocab, write_vocab_tokenizer(directory, [vocab[i] for i in keep], tokenizer)


# -- the stage ----------------------------------------------------------------


def importance(
    student: Classifier,
    teacher_logits: torch.Tensor,
    cfg: RunConfig,
    train: TokenizedSplit,
    progress: Progress = Silent(),
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-layer head and FFN-neuron scores (higher = more needed); shared by the prune stage and the budget search."""
    pcfg = cfg.prune
    if pcfg.importance == "magnitude":
        return magnitude_importance(student)
    loss_mod = DistillationLoss(cfg.distill.temperature, cfg.distill.alpha)
    return taylor_importance(student, train, teacher_logits, loss_mod, pcfg.importance_batches, cfg.distill.batch_size, cfg.seed, progress)


def prune(
    student: Classifier,
    teacher_logits: torch.Tensor,
    cfg: RunConfig,
    train: TokenizedSplit,
    progress: Progress = Silent(),
    scores: tuple[list[np.ndarray], list[np.ndarray]] | None = None,
) -> tuple[Classifier, dict[str, Any]]:
    """Structured pruning (no vocabulary change): returns the smaller model and the plan."""
    pcfg = cfg.prune
    head_scores, ffn_scores = scores or importance(student, teacher_logits, cfg, train, progress)
    c = student.config
    plan = select(head_scores, ffn_scores, pcfg, c.hidden_size, c.hidden_size // c.num_attention_heads)
    pruned = apply_plan(student, plan)
    return pruned, {
        "importance": pcfg.importance,
        "kept_layers": plan["layers"],
        "heads_kept": [len(h) for h in plan["heads"]],
        "ffn_kept": [len(f) for f in plan["ffn"]],
        "head_ratio": plan["head_ratio"],
        "ffn_ratio": plan["ffn_ratio"],
        "head_scores": [np.asarray(s).round(6).tolist() for s in head_scores],
        "shape": shape_of(pruned.encoder),
    }


def prune_vocab(model: Classifier, keep_ids: list[int]) -> Classifier:
    keep_tokens(model.encoder, keep_ids)
    return model


def recover(
    model: Classifier,
    teacher_logits: torch.Tensor,
    cfg: RunConfig,
    train: TokenizedSplit,
    progress: Progress = Silent(),
) -> dict[str, Any]:
    """Distil again from the teacher's soft targets so the pruned model regains accuracy."""
    pcfg = cfg.prune
    if pcfg.recovery_epochs == 0 and not pcfg.recovery_max_steps:
        return {"steps": 0}
    loss_mod = DistillationLoss(cfg.distill.temperature, cfg.distill.alpha)

    def loss_fn(m, idx, batch):
        logits = m(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        return loss_mod(logits, teacher_logits[torch.from_numpy(np.asarray(idx))], batch["labels"])["loss"]

    settings = TrainSettings(
        epochs=max(pcfg.recovery_epochs, 1e-9), lr=pcfg.recovery_lr, batch_size=cfg.distill.batch_size, max_steps=pcfg.recovery_max_steps
    )
    return fit(model, train, loss_fn, settings, seed=cfg.seed + 1, progress=progress, description="recover pruned")
