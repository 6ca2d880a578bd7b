"""make drafter, as data flows: corpus prompts -> the target's answers and features (shards) -> draft
vocabulary -> training-time test training -> a head in the official EAGLE-3 layout -> acceptance on held-out prompts.

Every stage is keyed by what it depends on (the target and its weights, the settings), so a
finished stage is reused, an interrupted one resumes, changing a training setting keeps the (costly)
features, and a damaged file is made again.
"""
from pathlib import Path

import torch
from safetensors import safe_open
from tqdm import tqdm

from ltd.core.artefacts import Artefact, hold, read_or_drop
from ltd.core.atomic import write_directory, write_json
from ltd.core.fingerprints import digest
from ltd.decoding.controller import StaticTree
from ltd.drafter.corpus import load_corpus, split
from ltd.drafter.head_eval import evaluate_head
from ltd.drafter.heads import DrafterJob, finished_head, pool_key, reusable_head
from ltd.drafter.loop import train
from ltd.drafter.target_features import (encode, first_sequences, load_shards, shard_path, target_pass,
                                         write_shard)
from ltd.drafter.vocabulary import choose_vocabulary, coverage
from ltd.models.eagle3 import Eagle3Head, eagle3_feature_layers, head_config


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
            shard = target_pass(target.decoder, chunk(i), feature_layers=layers, top_k=job.target_top_k,
                                batch_size=job.target_batch, new_tokens=job.answer_length,
                                stop_ids=target.stop_token_ids, progress=progress)
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
    history = train(head, embed, shards=shards, settings=job.train, state_path=work / "training.pt", log=log)

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
