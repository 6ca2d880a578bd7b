"""EAGLE-3's training-time test: the head unrolled for several steps on its own predictions.

Step 0 reads the target's fused features: index t pairs feature t with token t+1 at position t,
exactly as `Eagle3Drafter.update` does at inference. Step j >= 1 feeds back the head's own output
of step j-1 at the same index, paired with token t+j+1 at position t+j: a draft node of depth j.
Like that node at inference, it attends to the true context (step-0 keys up to t) and to its own
chain (keys of steps 1..j at index t). Step j at index t predicts token t+j+2; the loss is the
cross-entropy to the target's distribution there, restricted to the draft vocabulary.
"""
from dataclasses import dataclass, fields

import torch

from ltd.models.decoder import rotate
from ltd.models.eagle3 import Eagle3Head


@dataclass
class Batch:
    features: torch.Tensor  # [B, T, 3H] float
    tokens: torch.Tensor  # [B, T] long (padding: 0)
    top_ids: torch.Tensor  # [B, T, K] long: the target's most likely next tokens at each position
    top_probs: torch.Tensor  # [B, T, K] float
    predicts_response: torch.Tensor  # [B, T] bool, False on padding

    def to(self, device: torch.device) -> "Batch":
        return Batch(*(getattr(self, f.name).to(device) for f in fields(self)))


def shift_left(x: torch.Tensor, by: int, fill=0) -> torch.Tensor:
    """x[:, t + by] at index t, `fill` past the end."""
    if by == 0:
        return x
    pad = torch.full_like(x[:, :by], fill)
    return torch.cat((x[:, by:], pad), dim=1)


def draft_targets(head: Eagle3Head, top_ids: torch.Tensor, top_probs: torch.Tensor):
    """The target's distribution over the draft vocabulary: (draft ids, renormalised probs)."""
    in_draft = head.t2d[top_ids]
    draft_ids = torch.cumsum(head.t2d.long(), 0)[top_ids] - 1  # target id -> rank among draft ids
    probs = torch.where(in_draft, top_probs, 0.0)
    mass = probs.sum(-1, keepdim=True)
    return draft_ids.clamp(min=0), probs / mass.clamp(min=1e-6), mass.squeeze(-1)


def layer_step(head: Eagle3Head, hidden: torch.Tensor, embeds: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
               context_mask: torch.Tensor, context: tuple | None = None, chain: tuple = ()):
    """One pass of the head's layer over queries [N, R]: `hidden` and `embeds` [N, R, H], `cos` and
    `sin` broadcastable to [N, heads, R, d]. Returns the output hidden states and this step's
    (keys, values) [N, heads, R, d].

    Without `context` the R queries are a sequence (step 0): each attends to the keys of the
    sequence where `context_mask` [R, R] (causal) allows; they become the context of later steps.
    With it ((keys, values) [N, heads, T, d]), each query attends to the context where
    `context_mask` [N, R, T] allows, to its own `chain` (the (keys, values) of its earlier steps)
    and to itself: a draft node at inference."""
    config, layer = head.config, head.midlayer
    attn = layer.self_attn
    N, R = hidden.shape[:2]
    nh, nkv, d = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    x = torch.cat((layer.input_layernorm(embeds), layer.hidden_norm(hidden)), dim=-1)
    q = rotate(attn.q_proj(x).view(N, R, nh, d).transpose(1, 2), cos, sin)
    k = rotate(attn.k_proj(x).view(N, R, nkv, d).transpose(1, 2), cos, sin).repeat_interleave(nh // nkv, dim=1)
    v = attn.v_proj(x).view(N, R, nkv, d).transpose(1, 2).repeat_interleave(nh // nkv, dim=1)
    if context is None:
        context, chain = (k, v), ()
    else:
        chain = (*chain, (k, v))
    scale = d ** -0.5
    scores = ((q @ context[0].transpose(-1, -2)) * scale).masked_fill(~context_mask.unsqueeze(-3), float("-inf"))
    own = [(q * key).sum(-1, keepdim=True) * scale for key, _ in chain]
    weights = torch.cat([scores, *own], dim=-1).softmax(dim=-1)
    T = scores.shape[-1]
    out = weights[..., :T] @ context[1]
    for i, (_, value) in enumerate(chain):
        out = out + weights[..., T + i : T + i + 1] * value
    hidden = hidden + attn.o_proj(out.transpose(1, 2).reshape(N, R, nh * d))
    return hidden + layer.mlp(layer.post_attention_layernorm(hidden)), (k, v)


def context_step(head: Eagle3Head, embed: torch.Tensor, features: torch.Tensor, tokens: torch.Tensor,
                 cos: torch.Tensor, sin: torch.Tensor):
    """Step 0 over whole sequences: the hidden states [B, T, H], the context (keys, values) later
    steps attend to, and the causal mask over it.

    The head trains in float32 whatever the target's dtype: `embed` rows are upcast as read (a
    float32 copy of a large target's whole embedding would cost gigabytes)."""
    T = tokens.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=tokens.device).tril()
    hidden, context = layer_step(head, head.fc(features), embeds=embed[shift_left(tokens, 1)].float(), cos=cos[:T],
                                 sin=sin[:T], context_mask=causal)
    return hidden, context, causal


def unroll(head: Eagle3Head, embed: torch.Tensor, features: torch.Tensor, tokens: torch.Tensor, steps: int,
           cos: torch.Tensor, sin: torch.Tensor):
    """Yield the head's output hidden states [B, T, H] of steps 0, 1, ..., steps-1."""
    T = tokens.shape[1]
    hidden, context, causal = context_step(head, embed, features=features, tokens=tokens, cos=cos, sin=sin)
    chain = ()
    for j in range(steps):
        if j:
            embeds = embed[shift_left(tokens, j + 1)].float()
            hidden, kv = layer_step(head, hidden, embeds=embeds, cos=cos[j : j + T], sin=sin[j : j + T],
                                    context_mask=causal, context=context, chain=chain)
            chain = (*chain, kv)
        yield hidden


def ttt_loss(head: Eagle3Head, embed: torch.Tensor, batch: Batch, steps: int, cos: torch.Tensor,
             sin: torch.Tensor, decay: float = 0.8) -> tuple[torch.Tensor, list[float]]:
    """Weighted loss over `steps` unrolled steps, and each step's top-1 agreement with the target
    (the share of positions where the head's first choice is the target's)."""
    draft_ids, draft_probs, mass = draft_targets(head, batch.top_ids, batch.top_probs)
    top1_in_draft = head.t2d[batch.top_ids[..., 0]]
    total, agreements = 0.0, []
    for j, hidden in enumerate(unroll(head, embed, features=batch.features, tokens=batch.tokens, steps=steps, cos=cos,
                                      sin=sin)):
        # index t predicts token t+j+2: the target's distribution at position t+j+1
        weight = shift_left(batch.predicts_response, j + 1, False) & (shift_left(mass, j + 1) > 0)
        if not weight.any():
            break
        logits = head.lm_head(head.norm(hidden[weight]))
        ids, probs = shift_left(draft_ids, j + 1)[weight], shift_left(draft_probs, j + 1)[weight]
        total = total + decay ** j * -(probs * logits.log_softmax(-1).gather(-1, ids)).sum(-1).mean()
        hit = (logits.argmax(-1) == ids[:, 0]) & shift_left(top1_in_draft, j + 1, False)[weight]
        agreements.append(hit.float().mean().item())
    return total, agreements
