"""Logit lens and direct logit attribution, on top of TransformerLens's ActivationCache.

Both run the bridge's ``run_with_cache`` on left-padded batches (explicit
position ids, as the engine does), keeping only the hooks they need at the
position read, and use the cache's own helpers:

- **Logit lens**: ``accumulated_resid(apply_ln=True)`` runs the model's real
  final norm (``ln_final``: GPT-2 LayerNorm, Llama RMSNorm, statistics
  recomputed per layer) on the residual stream after each block, and
  ``logit_readout`` unembeds it (``W_U``, ``b_U``, the adapter's output
  transform). The last entry is the model's output, exactly.
- **Direct logit attribution (DLA)**: ``decompose_resid`` and
  ``stack_head_results`` split the final residual stream into the embeddings,
  each layer's attention and MLP output and each head;
  ``apply_ln_to_stack`` divides every part by the final norm's scale cached at
  the position read (and centres it for LayerNorm). That *linearises* the final
  norm around the actual input, so the parts sum exactly to the model's logit
  once the constants are added: ``logit = sum(parts) + beta @ W_U[:, t] + b_U[t]``.
  The learned norm weight is applied to the direction, ``gamma * W_U[:, t]``,
  because a raw bridge has not folded it into ``W_U``: TransformerLens's
  ``logit_attrs`` (and ``tools.analysis.direct_logit_attribution``) assume a
  folded, compatibility-mode model and refuse or misread a raw one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ._finite import find_nonfinite
from ._validate import position as _position
from ._validate import prompt_list as _prompt_list
from .backends import own_hooks
from .batching import left_pad
from .errors import InvalidArgument, LogitProbeError
from .lens_results import Attribution, LensResult
from .tokens import check_k

if TYPE_CHECKING:
    from transformer_lens.ActivationCache import ActivationCache

    from .probe import Probe

__all__ = ["Attribution", "LensMixin", "LensResult"]


class LensMixin:
    """Probe methods for logit-lens views and direct logit attribution."""

    def lens(self, prompt, tokens=(), *, k: int = 5, position: int = -1,
             incl_mid: bool = False, interventions: Any = None):
        """What the model would predict if it stopped after each block (logit lens).

        ``tokens`` are tracked across layers (rank, probability, logit); the
        result also keeps every layer's full logits for ``top(k)`` and plots.
        A list of prompts is run in batches and gives a list of results.

        >>> lens = probe.lens("The capital of France is", tokens=[" Paris"])  # doctest: +SKIP
        >>> lens.rank(" Paris")[-1], lens.final.argmax.token                 # doctest: +SKIP
        (1, ' Paris')
        """
        k = check_k(k, self.vocab_size)
        if not isinstance(incl_mid, bool):
            raise InvalidArgument(f"incl_mid={incl_mid!r}: `incl_mid` must be True or False")
        tracked = _token_list(self, tokens, "tokens")
        single, prompts, seqs = _prompts_at(self, prompt, position)
        intervention = self._compile_interventions(interventions)
        model = self.model
        n = int(model.cfg.n_layers)
        names = [f"blocks.{layer}.hook_resid_pre" for layer in range(n)]
        names += [f"blocks.{layer}.hook_resid_mid" for layer in range(n)] if incl_mid else []
        names.append(f"blocks.{n - 1}.hook_resid_post")
        results: list[LensResult | None] = [None] * len(prompts)
        for rows, cache, _ in _run_cached(self, seqs, names, intervention):
            from transformer_lens.tools.analysis import logit_readout

            with torch.no_grad():
                stack, tl_labels = cache.accumulated_resid(
                    layer=None, incl_mid=incl_mid, apply_ln=True, return_labels=True)
            # stack: [entries, batch, 1, d_model] -> logits [entries, batch, vocab]
            logits = logit_readout(model, stack[:, :, 0], apply_ln=False).values
            logits = logits.to("cpu", torch.float32)
            for b, i in enumerate(rows):
                results[i] = LensResult(
                    logits[:, b].clone(), vocab=self.vocab, prompt=prompts[i], token_ids=seqs[i][1],
                    position=seqs[i][2], labels=[_label(t, n) for t in tl_labels],
                    depths=[_depth(t, n) for t in tl_labels], tracked=tracked, k=k)
        return results[0] if single else results

    def attribute(self, prompt, token, *, versus=None, position: int = -1,
                  interventions: Any = None):
        """Direct logit attribution of ``token``'s logit (or ``token - versus``) to components.

        Splits the final residual stream at ``position`` into the embeddings,
        every layer's attention and MLP output and every attention head, and
        reads each through the final norm linearised at that position (its
        cached scale) and the unembedding: the parts plus ``bias`` sum to the
        model's logit (``Attribution.error`` is the float error).

        >>> att = probe.attribute("The capital of France is", " Paris",  # doctest: +SKIP
        ...                       versus=" London")
        >>> att.top(2)                                                   # doctest: +SKIP
        [('L23 attn', 3.021...), ('L28 mlp', 0.491...)]
        """
        single, prompts, seqs = _prompts_at(self, prompt, position)
        targets = _per_prompt(self, token, "token", len(prompts), single)
        others = (None if versus is None
                  else _per_prompt(self, versus, "versus", len(prompts), single))
        if others is not None:
            for t, o in zip(targets, others):
                if t == o:
                    raise InvalidArgument(f"versus={versus!r}: `versus` is the same token as "
                                          f"`token` ({self.vocab.decode_one(t)!r}); the logit "
                                          "difference would be 0. Give a competing token")
        intervention = self._compile_interventions(interventions)
        model = self.model
        n = int(model.cfg.n_layers)
        names = ["hook_embed", "ln_final.hook_normalized", "ln_final.hook_scale",
                 "ln_final.hook_out"]
        names += ["hook_pos_embed"] if "hook_pos_embed" in model.hook_dict else []
        for layer in range(n):
            names += [f"blocks.{layer}.hook_attn_out", f"blocks.{layer}.hook_mlp_out",
                      f"blocks.{layer}.attn.hook_z"]
        gamma, beta = _final_norm_affine(model)
        results: list[Attribution | None] = [None] * len(prompts)
        with torch.no_grad():
            for rows, cache, out in _run_cached(self, seqs, names, intervention):
                _check_norm(cache, gamma, beta)
                parts, labels = cache.decompose_resid(layer=None, return_labels=True)
                heads = cache.stack_head_results(layer=-1)
                # [components, batch, 1, d_model]: each part as the final norm sees it
                parts = cache.apply_ln_to_stack(parts, layer=None)
                heads = cache.apply_ln_to_stack(heads, layer=None)
                direction, const = _logit_direction(model, [targets[i] for i in rows], gamma, beta)
                idx = torch.tensor([targets[i] for i in rows], device=out.device)
                logit = out[:, -1].gather(-1, idx[:, None])[:, 0].float()
                if others is not None:
                    o_dir, o_const = _logit_direction(model, [others[i] for i in rows],
                                                      gamma, beta)
                    direction, const = direction - o_dir, const - o_const
                    oidx = torch.tensor([others[i] for i in rows], device=out.device)
                    logit = logit - out[:, -1].gather(-1, oidx[:, None])[:, 0].float()
                comp = (parts[:, :, 0].float() * direction).sum(-1).cpu()  # [C, batch]
                per_head = (heads[:, :, 0].float() * direction).sum(-1).cpu()  # [L*H, batch]
                per_head = per_head.reshape(n, -1, per_head.shape[-1])
                for b, i in enumerate(rows):
                    results[i] = Attribution(
                        prompt=prompts[i], position=seqs[i][2], vocab=self.vocab,
                        token_id=targets[i], versus_id=None if others is None else others[i],
                        labels=[_part_label(t) for t in labels], values=comp[:, b].clone(),
                        heads=per_head[:, :, b].clone(), bias=float(const[b]),
                        logit=float(logit[b]))
        return results[0] if single else results


# -- running ---------------------------------------------------------------------------
_AFTER_THE_STREAM = ("ln_final.", "unembed.", "hook_unembed")


def _prompts_at(probe: Probe, prompt: Any, position: Any) -> tuple[bool, list[str], list[tuple]]:
    """Validate prompts and position; each seq is (ids up to the position read, all ids, pos)."""
    single = isinstance(prompt, str)
    prompts = [prompt] if single else _prompt_list(prompt)
    if isinstance(position, bool) or not isinstance(position, int):
        raise InvalidArgument(f"position={position!r}: `position` must be an int "
                              "(-1 for the last token)")
    seqs = []
    for p in prompts:
        ids = probe.vocab.encode(p)
        pos = _position(position, len(ids), p)
        # A causal model's activations at `pos` do not depend on later tokens.
        seqs.append((ids[:pos + 1], ids, pos))
    return single, prompts, seqs


def _run_cached(probe: Probe, seqs: list[tuple], names: list[str], intervention: Any):
    """Yield ``(row indices, cache, logits[batch, 1, vocab])`` per left-padded batch.

    The cache holds ``names`` at the last position only (``[batch, 1, ...]``).
    """
    model = probe.model
    if getattr(probe.backend, "kind", None) != "bridge":
        raise LogitProbeError(f"{type(model).__name__}: the logit lens and attribution need a "
                              "TransformerLens 4 TransformerBridge (logitprobe.load makes one)")
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i][0]))
    budget = probe.engine.max_batch_tokens
    groups: list[list[int]] = []
    for i in order:
        if groups and (len(groups[-1]) + 1) * len(seqs[groups[-1][0]][0]) <= budget:
            groups[-1].append(i)
        else:
            groups.append([i])
    for rows in groups:
        batch = left_pad([seqs[i][0] for i in rows], probe.engine.pad_id)
        kwargs: dict[str, Any] = {}
        if batch.padded:
            kwargs = {"attention_mask": batch.mask.to(probe.device),
                      "position_ids": batch.position_ids().to(probe.device)}
        hooks = intervention.hooks(batch.layout(keep=1)) if intervention is not None else []
        late = sorted({name for name, _ in hooks if name.startswith(_AFTER_THE_STREAM)})
        if late:
            raise InvalidArgument(f"interventions: {late!r} edit the final norm or the logits, "
                                  "after the residual stream that the lens and attribution read, "
                                  "so they cannot show them; use next_token for logit edits")
        with probe.engine.lock, torch.no_grad(), own_hooks(model, hooks):
            out, cache = model.run_with_cache(batch.tokens.to(probe.device), names_filter=names,
                                              pos_slice=slice(-1, None), logits_to_keep=1,
                                              **kwargs)
        # The same finite-logits guarantee as every engine forward (NonFiniteLogitsError,
        # naming the intervention that produced them).
        bad = find_nonfinite(out[:, -1:].to("cpu", torch.float32))
        if bad is not None:
            raise probe.engine.nonfinite_error(bad, seqs[rows[bad.row]][0], 1, intervention)
        probe.engine.stats.count(batch)
        yield rows, cache, out


# -- tokens ----------------------------------------------------------------------------
def _token_list(probe: Probe, tokens: Any, name: str) -> tuple[int, ...]:
    if isinstance(tokens, (str, int)) and not isinstance(tokens, bool):
        tokens = [tokens]
    if not isinstance(tokens, (list, tuple)):
        raise InvalidArgument(f"{name}={tokens!r}: `{name}` must be a list of tokens "
                              "(e.g. [' Paris', ' London']) or one token")
    return tuple(probe.vocab.token_id(t, name=f"{name}[{j}]") for j, t in enumerate(tokens))


def _per_prompt(probe: Probe, token: Any, name: str, n: int, single: bool) -> list[int]:
    if isinstance(token, (list, tuple)) and not single:
        if len(token) != n:
            raise InvalidArgument(f"{name}: got {len(token)} tokens for {n} prompts; give one "
                                  "token for all prompts or one per prompt")
        return [probe.vocab.token_id(t, name=f"{name}[{j}]") for j, t in enumerate(token)]
    return [probe.vocab.token_id(token, name=name)] * n


# -- the final norm --------------------------------------------------------------------
def _final_norm_affine(model: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(gamma, beta)`` of ``ln_final``: output = normalized * gamma + beta."""
    if model.cfg.normalization_type not in ("LN", "LNPre", "RMS", "RMSPre"):
        raise LogitProbeError(f"attribute: normalization_type={model.cfg.normalization_type!r} "
                              "is not supported (LayerNorm or RMSNorm models only)")
    norm = getattr(model.ln_final, "original_component", model.ln_final)
    weight = getattr(norm, "weight", None)
    d = int(model.cfg.d_model)
    gamma = weight.detach() if isinstance(weight, torch.Tensor) else torch.ones(d)
    if getattr(model.cfg, "rmsnorm_uses_offset", False):
        gamma = gamma + 1.0  # Gemma-style RMSNorm multiplies by (1 + weight)
    bias = getattr(norm, "bias", None)
    beta = bias.detach() if isinstance(bias, torch.Tensor) else None
    return gamma, beta


def _check_norm(cache: "ActivationCache", gamma: torch.Tensor, beta: torch.Tensor | None) -> None:
    """Refuse when ``normalized * gamma + beta`` is not what the final norm output."""
    normalized, out = cache["ln_final.hook_normalized"], cache["ln_final.hook_out"]
    ours = normalized * gamma + (beta if beta is not None else 0)
    err = float((ours - out).abs().max())
    if err > 1e-3 * max(1.0, float(out.abs().max())):
        raise LogitProbeError(f"attribute: this model's final norm is not `normalized * weight + "
                              f"bias` (off by {err:.3g}); direct logit attribution would be wrong")


def _logit_direction(model: Any, ids: list[int], gamma: torch.Tensor, beta: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the direction ``gamma * W_U[:, t]`` ([batch, d_model], float32) that a
    normalized part is dotted with, and the constant ``beta . W_U[:, t] + b_U[t]``."""
    w_u = model.W_U[:, ids].T.float()  # [batch, d_model]
    const = torch.zeros(len(ids), device=w_u.device)
    if beta is not None:
        const = const + w_u @ beta.float()
    b_u = getattr(model, "b_U", None)
    if isinstance(b_u, torch.Tensor):
        const = const + b_u[ids].float()
    return w_u * gamma.float(), const


# -- labels ----------------------------------------------------------------------------
def _label(tl_label: str, n_layers: int) -> str:
    """TransformerLens's '3_pre' (input to block 3) -> 'block 2' (output of block 2)."""
    if tl_label == "final_post":
        return f"block {n_layers - 1}"
    layer, kind = tl_label.split("_")
    if kind == "mid":
        return f"block {layer} attn"
    return "embed" if layer == "0" else f"block {int(layer) - 1}"


def _depth(tl_label: str, n_layers: int) -> float:
    """Blocks applied so far: 0 for the embeddings, n_layers for the output, x.5 after attn."""
    if tl_label == "final_post":
        return float(n_layers)
    layer, kind = tl_label.split("_")
    return int(layer) + (0.5 if kind == "mid" else 0.0)


def _part_label(tl_label: str) -> str:
    """'3_attn_out' -> 'L3 attn'; 'embed' and 'pos_embed' stay."""
    if tl_label.endswith("_out"):
        layer, kind, _ = tl_label.split("_")
        return f"L{layer} {kind}"
    return tl_label
