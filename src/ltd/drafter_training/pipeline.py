"""make drafter, as data flows: corpus prompts -> the target's answers and features (shards) -> draft
vocabulary -> training-time test training -> a head in the official EAGLE-3 layout -> acceptance on held-out prompts.

Every stage is keyed by what it depends on (the target and its weights, the settings), so a
finished stage is reused, an interrupted one resumes, changing a training setting keeps the (costly)
features, and a damaged file is made again.
"""
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from tqdm import tqdm

from ltd.artefacts import Artefact, damaged, hold, read_or_drop, remove
from ltd.atomic import write_directory, write_json
from ltd.decoding.controller import StaticTree
from ltd.drafter_training.corpus import load_corpus, split
from ltd.drafter_training.head_eval import evaluate_head
from ltd.drafter_training.loop import TrainSettings, train
from ltd.drafter_training.target_features import (encode, first_sequences, load_shards, shard_path, target_pass,
                                                  write_shard)
from ltd.drafter_training.vocabulary import choose_vocabulary, coverage
from ltd.errors import LtdError
from ltd.fingerprints import digest
from ltd.models.eagle3 import Eagle3Head, eagle3_feature_layers, head_config

FEATURES, HEAD = 1, 1  # formats: a change to what these stages write makes earlier copies stale


@dataclass
class HeadData:
    """What a head learns from and is evaluated on (the `train:` block of a drafter config, beside
    the optimiser's TrainSettings)."""
    corpus: list[str]
    responses: str = "target"  # who writes the responses: the target itself (greedy) or the corpus
    answer_tokens: int = 256  # longest answer the target writes (responses: target)
    max_tokens: int = 200_000  # tokens the target produces features for (prompts and responses)
    max_length: int = 512  # longest prompt the target answers (responses: corpus, longest conversation)
    held_out: int = 16  # corpus examples kept aside for the evaluation
    target_top_k: int = 16  # the target's next-token distribution is kept as its top-k
    target_batch: int = 32  # sequences the target reads or answers at once
    shard_size: int = 64  # sequences per shard
    eval_prompts: int = 8
    eval_new_tokens: int = 128
    eval_tree: tuple[int, int, int] = (8, 10, 60)  # depth, top-k, V: EAGLE-3's default


@dataclass
class DrafterJob(HeadData):
    draft_vocab_size: int = 8192
    intermediate_size: int | None = None  # the head's MLP width (None: the target's)
    train: TrainSettings = field(default_factory=TrainSettings)

    @property
    def answering(self) -> bool:
        """Whether the target writes the responses itself."""
        return self.responses == "target"

    @property
    def answer_length(self) -> int:
        """The longest answer the target writes; 0 when it reads the corpus responses."""
        return self.answer_tokens if self.answering else 0

    def validate(self, vocab_size: int | None = None) -> None:
        """One LtdError line for settings no head can be trained with (the vocabulary's size once the
        target is loaded)."""
        if vocab_size is not None and self.draft_vocab_size > vocab_size:
            raise LtdError(f"draft vocabulary ({self.draft_vocab_size}) is larger than the target's ({vocab_size})")
        if self.responses not in ("target", "corpus"):
            raise LtdError(f"drafter training responses must be one of target, corpus; got {self.responses!r}")
        for name in ("answer_tokens", "max_tokens", "max_length", "target_top_k", "draft_vocab_size", "target_batch",
                     "shard_size", "eval_prompts", "eval_new_tokens"):
            if getattr(self, name) < 1:
                raise LtdError(f"drafter training {name} must be >= 1, got {getattr(self, name)}")
        StaticTree(*self.eval_tree)  # the evaluation's tree: checked now, not after the training


def features_key(model: dict, job: DrafterJob) -> dict:
    """What the target's answers and features depend on (`model`: the target's identity)."""
    return {"artefact": "drafter features", "format": FEATURES, "model": model, "corpus": job.corpus,
            "responses": job.responses, "answer_length": job.answer_length, "max_tokens": job.max_tokens,
            "max_length": job.max_length, "held_out": job.held_out, "target_top_k": job.target_top_k,
            "seed": job.train.seed}


def pool_key(model: dict, job: DrafterJob) -> dict:
    """What the features directory depends on: the features' key but their budget. A larger
    `max_tokens` answers the same conversations first, then more, so runs add to one pool of shards
    and a run reads the first shards it needs."""
    key = features_key(model, job)
    del key["max_tokens"]
    return key


def head_key(model: dict, job: DrafterJob) -> dict:
    settings = asdict(job)
    if settings["intermediate_size"] is None:  # the key of heads as wide as their target, as before the option
        del settings["intermediate_size"]
    return {"artefact": "eagle3 head", "format": HEAD, "features": features_key(model, job), "job": settings}


def head_directory(root: Path, model_name: str, model: dict, job: DrafterJob) -> Path:
    """Where the finished head for this model and job lives (whether or not it exists yet)."""
    return Path(root) / model_name / f"eagle3-{digest(head_key(model, job), 10)}" / "head"


def finished_head(root: Path, model_name: str, model: dict, job: DrafterJob) -> Artefact:
    return Artefact(head_directory(root, model_name, model, job), head_key(model, job), "drafter head", directory=True)


@torch.no_grad()
def warm_start(head: Eagle3Head, decoder) -> None:
    """Start where the target already is: its output norm and the output rows of the draft
    vocabulary, and an `fc` that passes the high-layer feature through. The head then begins
    near the target's own late-layer prediction and learns the step ahead, instead of learning
    the target's output space from scratch (it cannot, in minutes of CPU).

    The target's weights may be in another dtype on another device: copy_ converts them into the
    head's float32 (exactly, from bfloat16 or float16)."""
    rows = head.draft_to_target(torch.arange(head.lm_head.out_features, device=head.d2t.device))
    head.norm.weight.copy_(decoder.final_norm)
    head.lm_head.weight.copy_(decoder.lm_head[rows.to(decoder.device)])
    hidden = head.fc.out_features
    head.fc.weight.zero_()
    head.fc.weight[:, 2 * hidden :].copy_(torch.eye(hidden))


def select_sequences(target, examples, job: DrafterJob):
    """Conversations until about `max_tokens` tokens (an answer counted at its longest)."""
    answering = job.answering
    sequences, total = [], 0
    for example in examples:
        if total >= job.max_tokens:
            break
        sequence = encode(target, example, job.max_length, with_response=not answering)
        if answering and len(sequence.tokens) <= job.max_length:  # a cut prompt would lose its answer header
            sequences.append(sequence)
            total += len(sequence.tokens) + job.answer_tokens
        elif not answering and sequence.response_start < len(sequence.tokens) - 1:  # something left to learn from
            sequences.append(sequence)
            total += len(sequence.tokens)
    return sequences


def prepare_features(target, sequences, directory: Path, job: DrafterJob, log) -> int:
    """Run the target over every missing shard; returns the shard count."""
    directory.mkdir(parents=True, exist_ok=True)
    shards = (len(sequences) + job.shard_size - 1) // job.shard_size
    chunk = lambda i: sequences[i * job.shard_size : (i + 1) * job.shard_size]
    missing = [i for i in range(shards) if not readable_shard(shard_path(directory, i), len(chunk(i)))]
    if not missing:
        return shards
    answering = job.answering
    log(f"the target {'answers' if answering else 'reads'} {len(sequences)} conversations into {directory} "
        f"({shards - len(missing)} of {shards} shards already there)")
    layers = eagle3_feature_layers(target.config.num_hidden_layers)
    with tqdm(total=sum(len(chunk(i)) for i in missing), desc="target answers" if answering else "teacher forcing",
              unit="seq", mininterval=1.0) as bar:
        produced = 0

        def progress(done: int, tokens: int) -> None:
            nonlocal produced
            produced += tokens
            rate = produced / max(bar.format_dict["elapsed"], 1e-6)
            bar.set_postfix(tokens=produced, tok_s=f"{rate:.0f}", refresh=False)
            bar.update(done)

        for i in missing:
            shard = target_pass(target.decoder, chunk(i), layers, job.target_top_k, job.target_batch,
                                job.answer_length, target.stop_token_ids, progress)
            write_shard(shard_path(directory, i), shard)
    return shards


def readable_shard(path: Path, sequences: int) -> bool:
    """Whether a shard is there, whole (its header matches its size; a damaged one is deleted) and
    holds at least `sequences` sequences (the last shard of a run with a smaller budget holds fewer:
    made again; one of a larger budget holds more: the run reads its first `sequences`)."""
    def count(shard: Path) -> int:
        with safe_open(str(shard), framework="pt") as f:
            return f.get_slice("offsets").get_shape()[0] - 1

    return (read_or_drop(path, count, "the target produces it again") or 0) >= sequences


def reusable_head(final: Artefact, log) -> dict | None:
    """The metrics of the finished head when it is there, this job's, and loads; else None (and a
    damaged head is deleted, to be made again from the training state)."""
    if not final.path.exists():
        return None
    if not final.fresh:
        log(f"{final.path} was made under other settings ({final.changes()}); making it again")
        remove(final.path)
        return None
    try:
        Eagle3Head.load(final.path)
        return json.loads((final.path / "metrics.json").read_text())
    except (LtdError, OSError, ValueError) as error:
        damaged(final.path, error, "evaluating the trained head again")
        return None


def head_data(target, job: DrafterJob, root: str | Path, log=print) -> tuple[list[dict], list]:
    """The shards a head trains on (made where missing) and the held-out corpus examples."""
    train_examples, held_out = split(load_corpus(job.corpus), job.held_out, job.train.seed)
    sequences = select_sequences(target, train_examples, job)
    key = pool_key(target.identity, job)
    features = Artefact(Path(root) / target.name / f"features-{digest(key, 10)}", key, "drafter features",
                        directory=True)
    features.open(owned=("shard-*.safetensors",))
    shards = load_shards(features.path, prepare_features(target, sequences, features.path, job, log))
    shards[-1] = first_sequences(shards[-1], len(sequences) - (len(shards) - 1) * job.shard_size)
    return shards, held_out


def train_drafter(target, job: DrafterJob, root: str | Path, log=print) -> tuple[Path, dict]:
    """Train (or reuse) the EAGLE-3 head for `target`; returns its directory and its metrics."""
    job.validate(target.config.vocab_size)
    final = finished_head(Path(root), target.name, target.identity, job)
    metrics = reusable_head(final, log)
    if metrics is not None:
        log(f"reusing the finished drafter in {final.path}")
        return final.path, metrics
    work = final.path.parent
    hold(work, "drafter training")
    shards, held_out = head_data(target, job, root, log)
    vocabulary = choose_vocabulary(shards, target.config.vocab_size, job.draft_vocab_size)
    covered = coverage(shards, vocabulary, target.config.vocab_size)
    log(f"draft vocabulary: {job.draft_vocab_size} tokens cover {covered:.1%} of the target's top-1 predictions")
    torch.manual_seed(job.train.seed)
    width = job.intermediate_size or target.config.intermediate_size
    head = Eagle3Head(head_config(target.config, job.draft_vocab_size, intermediate_size=width))
    head.set_vocabulary(vocabulary)
    warm_start(head, target.decoder)
    embed = target.decoder.embed
    history = train(head, embed, shards, job.train, work / "training.pt", log)

    prompts = [target.encode_chat([{"role": "user", "content": e.prompt}]) for e in held_out[: job.eval_prompts]]
    metrics = evaluate_head(target, head, prompts, job.eval_new_tokens, StaticTree(*job.eval_tree))
    tail = history[-50:]
    metrics.update(
        draft_vocab_coverage=covered,
        train_tokens=sum(int(s["predicts_response"].sum()) for s in shards),
        train_steps=len(history),
        final_loss=sum(r["loss"] for r in tail) / len(tail),
        final_agreement_by_step=[sum(r["agreement"][j] for r in tail) / len(tail)
                                 for j in range(min(len(r["agreement"]) for r in tail))],
        train_seconds=sum(r["seconds"] for r in history),
    )
    def write(tmp: Path) -> None:
        # Saved as trained, in float32 (official EAGLE-3 heads ship in bfloat16): Eagle3Head.load
        # builds a float32 head either way, and Eagle3Drafter casts it to its target's dtype.
        head.cpu().save(tmp)
        write_json(tmp / "metrics.json", metrics)
        write_json(tmp / "key.json", final.key)

    write_directory(final.path, write)
    return final.path, metrics
