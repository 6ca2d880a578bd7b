"""The EAGLE-3 head: checkpoint layout, vocabulary mapping, and the drafter's incremental cache."""
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from conftest import random_prompt, randomize_, tiny_config
from ltd.core.errors import LtdError
from ltd.decoding.controller import StaticTree
from ltd.decoding.tree import DraftTree
from ltd.models.decoder import KVCache
from ltd.models.eagle3 import Eagle3Drafter, Eagle3Head, head_config
from ltd.models.proposals import top_k_entropy

DRAFT_VOCAB = 64

OFFICIAL_KEYS = {
    "fc.weight",
    "midlayer.hidden_norm.weight",
    "midlayer.input_layernorm.weight",
    "midlayer.post_attention_layernorm.weight",
    *(f"midlayer.self_attn.{p}_proj.weight" for p in "qkvo"),
    *(f"midlayer.mlp.{p}_proj.weight" for p in ("gate", "up", "down")),
    "norm.weight",
    "lm_head.weight",
    "d2t",
    "t2d",
}


def vocabulary(seed: int = 0) -> torch.Tensor:
    """DRAFT_VOCAB distinct target ids in random (unsorted) order."""
    return torch.randperm(tiny_config("llama").vocab_size, generator=torch.Generator().manual_seed(seed))[:DRAFT_VOCAB]


def random_head(seed: int = 0) -> Eagle3Head:
    """A head with every tensor random (norms included) and a non-trivial vocabulary."""
    torch.manual_seed(seed)
    head = Eagle3Head(head_config(tiny_config("llama"), draft_vocab_size=DRAFT_VOCAB))
    randomize_(head, seed)
    head.set_vocabulary(vocabulary(seed))
    return head


def assert_same_tensors(a: dict, b: dict):
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert torch.equal(a[name], b[name]), name


# -- checkpoint layout ----------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path):
    head = random_head()
    head.save(tmp_path)
    loaded = Eagle3Head.load(tmp_path)
    assert_same_tensors(head.state_dict(), loaded.state_dict())
    assert loaded.config.draft_vocab_size == DRAFT_VOCAB
    assert loaded.config.target_hidden_size == head.config.target_hidden_size


def test_saved_keys_are_the_official_layout(tmp_path):
    from safetensors.torch import load_file

    random_head().save(tmp_path)
    assert set(load_file(tmp_path / "model.safetensors")) == OFFICIAL_KEYS


def test_load_pytorch_model_bin_ignores_target_embedding(tmp_path):
    head = random_head(seed=1)
    head.config.save_pretrained(tmp_path)
    state = dict(head.state_dict())
    state["embed_tokens.weight"] = torch.randn(head.config.vocab_size, head.config.hidden_size)
    torch.save(state, tmp_path / "pytorch_model.bin")

    loaded = Eagle3Head.load(tmp_path)
    assert_same_tensors(head.state_dict(), loaded.state_dict())
    assert loaded.config.draft_vocab_size == DRAFT_VOCAB


# -- vocabulary ------------------------------------------------------------------------------------
def test_set_vocabulary_maps_draft_ids_to_sorted_target_ids():
    head = random_head()
    ids = vocabulary()
    assert not torch.equal(ids, ids.sort().values)  # the input really is unsorted
    assert torch.equal(head.draft_to_target(torch.arange(DRAFT_VOCAB)), ids.sort().values)
    assert torch.equal(head.t2d.nonzero().squeeze(-1), ids.sort().values)


def test_default_vocabulary_is_the_first_target_ids():
    head = Eagle3Head(head_config(tiny_config("llama"), draft_vocab_size=DRAFT_VOCAB))
    assert torch.equal(head.draft_to_target(torch.arange(DRAFT_VOCAB)), torch.arange(DRAFT_VOCAB))
    assert int(head.t2d.sum()) == DRAFT_VOCAB and bool(head.t2d[:DRAFT_VOCAB].all())


def test_draft_vocabulary_larger_than_target_raises():
    config = tiny_config("llama")
    with pytest.raises(LtdError, match="draft vocabulary"):
        Eagle3Head(head_config(config, draft_vocab_size=config.vocab_size + 1))


# -- drafter cache ---------------------------------------------------------------------------------
K = 3
PROMPT = random_prompt(12, seed=8)
ROOT = 42


@pytest.fixture
def setup(tiny):
    """(target decoder, drafter with a random head, prompt features)."""
    target = tiny("llama")
    decoder = target.decoder()
    drafter = target.eagle3_drafter(decoder, DRAFT_VOCAB)
    randomize_(drafter.head, seed=3)  # std 0.02 init would leave near-ties in the top-k
    drafter.head.set_vocabulary(vocabulary(3))
    decoder.reset()
    _, features = decoder(torch.tensor(PROMPT), feature_layers=drafter.feature_layers, last_only=True)
    drafter.reset(decoder.max_positions)
    return decoder, drafter, features


def twin(drafter: Eagle3Drafter, decoder) -> Eagle3Drafter:
    """Another drafter with the same head, its cache empty."""
    other = Eagle3Drafter(drafter.head, decoder.embed, decoder.spec.num_layers, decoder.max_positions)
    other.reset(decoder.max_positions)
    return other


def reference_proposals(drafter, features: torch.Tensor, path: list[int]):
    """Top-k children of the node reached by `path` from the root, recomputed from scratch.

    The context pairs feature i with token i+1 (the root last); each drafted node then pairs the
    head's own output at its parent with the node's token. Every step reruns the head's layer over
    the whole sequence with a fresh cache and a causal mask: no state carried between steps."""
    head = drafter.head
    hidden = F.linear(features, head.fc.weight)
    tokens = torch.tensor(PROMPT[1:] + [ROOT] + path)
    n_context = features.shape[0]
    for step in range(len(path) + 1):
        n = n_context + step
        cache = KVCache(1, head.config.num_key_value_heads, head.config.head_dim, n, torch.device("cpu"))
        mask = cache.attention_mask(n, None, None)
        out = head.layer(hidden, drafter.embed[tokens[:n]], cache=cache, cos=drafter.cos[:n], sin=drafter.sin[:n],
                         mask=mask)
        hidden = torch.cat((hidden, out[-1:]))
    logp, draft_ids, _ = top_k_entropy(F.linear(head.norm(out[-1:]), head.lm_head.weight), K)
    return logp[0], head.draft_to_target(draft_ids)[0]


def assert_same_proposals(got, expected, what: str):
    """Same top-k (log-probs, tokens); the drafter's entropy, when `got` carries it, is checked elsewhere."""
    (got_logp, got_tokens), (expected_logp, expected_tokens) = got[:2], expected[:2]
    assert torch.equal(got_tokens, expected_tokens), what
    assert_close(got_logp, expected_logp, atol=1e-5, rtol=1e-5, msg=lambda m: f"{what}: {m}")


def node_path(tree: DraftTree, node: int) -> list[int]:
    """Target tokens from the root's child down to global candidate `node`."""
    tokens, parents = torch.cat(tree.tokens).tolist(), torch.cat(tree.parents).tolist()
    path = []
    while node >= 0:
        path.append(tokens[node])
        node = parents[node]
    return path[::-1]


def test_update_in_one_call_equals_two_chunks(setup):
    decoder, drafter, features = setup
    context = torch.tensor(PROMPT + [ROOT])
    whole = drafter.update(context, features, K)

    chunked = twin(drafter, decoder)
    chunked.update(context[:7], features[:6], K)
    assert_same_proposals(chunked.update(context[7:], features[6:], K), whole, "root")


def test_cached_expansions_equal_recomputation(setup):
    _, drafter, features = setup
    tree = DraftTree(K)
    root = drafter.update(torch.tensor(PROMPT + [ROOT]), features, K)
    assert_same_proposals(tuple(x[0] for x in root), reference_proposals(drafter, features, []), "root")
    tree.add_root(*root)

    for depth in (1, 2, 3):  # feeds the root's children, then grandchildren, then the level below
        frontier = tree.frontier.tolist()
        logp, tokens, entropy = drafter.expand(tree.frontier_tokens(), tree.frontier_parent_slots, tree.depth, K)
        assert len(frontier) == K
        for row, node in enumerate(frontier):
            path = node_path(tree, node)
            assert len(path) == depth
            assert_same_proposals((logp[row], tokens[row]), reference_proposals(drafter, features, path),
                                  f"depth {depth} node {path}")
        tree.add_expansion(logp, tokens, entropy)


def test_rollback_then_update_equals_fresh_drafter(setup):
    """The engine's cycle: draft, roll back, absorb the accepted tokens. Absorbing must give what a
    drafter that never drafted gives over the same context."""
    decoder, drafter, features = setup
    context = PROMPT + [ROOT]
    tree = DraftTree(K)
    tree.add_root(*drafter.update(torch.tensor(context), features, K))
    for _ in range(2):
        tree.add_expansion(*drafter.expand(tree.frontier_tokens(), tree.frontier_parent_slots, tree.depth, K))
    drafter.rollback()

    # Two accepted tokens and a new root; their features come from the target's verify pass.
    accepted = [17, 23, 5]
    _, new_features = decoder(torch.tensor([ROOT, 17, 23]), feature_layers=drafter.feature_layers)
    after_rollback = drafter.update(torch.tensor(accepted), new_features, K)

    fresh = twin(drafter, decoder)
    all_features = torch.cat((features, new_features))
    assert_same_proposals(after_rollback, fresh.update(torch.tensor(context + accepted), all_features, K), "root")


def test_engine_feeds_the_head_the_features_of_the_accepted_path(tiny):
    """Across cycles, the (token, feature) pairs the engine hands to `update` must be those of the
    final sequence, as one causal target pass computes them: the features kept after a verify pass
    are those of the accepted path. Greedy outputs cannot show this (they are right whatever the
    drafter gets), so it is checked here directly."""
    target = tiny("llama")
    vocab = target.config.vocab_size
    engine, decoder = target.engine(lambda t: target.eagle3_drafter(t, draft_vocab_size=vocab))
    drafter = engine.drafter
    randomize_(drafter.head, seed=4)

    absorbed_tokens, absorbed_features = [], []
    update = drafter.update

    def recording_update(tokens, features, k):
        absorbed_tokens.append(tokens[-features.shape[0]:].clone())
        absorbed_features.append(features.clone())
        return update(tokens, features, k)

    drafter.update = recording_update
    # A wide tree over the full vocabulary: even a random head gets drafts accepted, at verify
    # indices other than 1, so keeping the wrong feature rows would show.
    generation = engine.generate(PROMPT, StaticTree(depth=4, top_k=50, verify=150), 30)
    assert sum(c.accepted > 0 for c in generation.cycles) >= 3, "the test needs accepted drafts"

    sequence = PROMPT + generation.tokens
    tokens, features = torch.cat(absorbed_tokens), torch.cat(absorbed_features)
    n = tokens.numel()
    assert tokens.tolist() == sequence[1 : n + 1]
    fresh = target.decoder()
    fresh.reset()
    _, expected = fresh(torch.tensor(sequence[:n]), feature_layers=drafter.feature_layers)
    assert_close(features, expected, atol=1e-5, rtol=1e-5)


def test_an_untrained_head_is_as_wide_as_its_config_says(tiny_model_dir):
    """A config's narrow head (drafter=eagle3_cpu) drafts, untrained, at its own width, so what is
    profiled for it is what a trained one would cost; the width is part of its identity."""
    from ltd.models.drafters import drafter_identity, load_drafter
    from ltd.models.targets import load_target

    target = load_target("tiny", str(tiny_model_dir), max_context=64)
    full = load_drafter(target, "eagle3", None, DRAFT_VOCAB, 0)
    narrow = load_drafter(target, "eagle3", None, DRAFT_VOCAB, 0, intermediate_size=8)
    assert full.head.config.intermediate_size == target.config.intermediate_size != 8
    assert narrow.head.midlayer.mlp.up_proj.weight.shape[0] == 8
    plain = drafter_identity("eagle3", None, 0, DRAFT_VOCAB)
    assert "intermediate_size" not in plain  # heads as wide as their target keep their keys
    assert drafter_identity("eagle3", None, 0, DRAFT_VOCAB, intermediate_size=8) == dict(plain, intermediate_size=8)
