"""The samplers: the MaskGIT commit rule (``commit_step``), the one MaskGIT loop (token draws, guidance on hidden
states, step-0 sharing, previews, editing), and per-row generators for every sampler family."""

from __future__ import annotations

import pytest
import torch

from pixlm.models.masked import MaskedConfig, MaskedTransformer
from pixlm.sampling.cfg import take_rows
from pixlm.sampling.maskgit import MaskGITSampler, commit_step, maskgit_loop
from pixlm.sampling.randomness import check_generators, rand_rows
from pixlm.sampling.registry import make_sampler
from pixlm.testing import TINY_GENERATOR_KINDS, tiny_pipeline, tiny_pipeline_for

M = 9  # mask id for these 8-token rows over a vocabulary of 4


def _probs(confident: list[int]) -> torch.Tensor:
    """(1, 8, 4) probabilities: token 0 at 0.97 where ``confident``, else token 0 at 0.3."""
    p = torch.full((1, 8, 4), 0.7 / 3)
    p[0, :, 0] = 0.3
    for i in confident:
        p[0, i] = torch.tensor([0.97, 0.01, 0.01, 0.01])
    return p


def test_classic_rule_never_remasks_committed_tokens() -> None:
    tokens = torch.tensor([[0, 0, M, M, M, M, M, M]])  # positions 0, 1 committed earlier, now doubted
    probs = _probs(confident=[2, 3, 4, 5, 6, 7])
    out = commit_step(tokens, torch.zeros_like(tokens), probs, None, 0, 4, torch.tensor([2]), mask_id=M,
                      choice_temperature=0.0, revise_margin=None)
    assert out[0, :2].tolist() == [0, 0] and int((out == M).sum()) == 2


@pytest.mark.parametrize("margin, revised", [(0.5, True), (10.0, False)])
def test_revision_remasks_doubted_committed_tokens(margin: float, revised: bool) -> None:
    tokens = torch.tensor([[0, 0, M, M, M, M, M, M]])
    probs = _probs(confident=[2, 3, 4, 5, 6, 7])  # committed: log 0.3 = -1.2; new: log 0.97 = -0.03
    out = commit_step(tokens, torch.zeros_like(tokens), probs, None, 0, 4, torch.tensor([2]), mask_id=M,
                      choice_temperature=0.0, revise_margin=margin)
    assert int((out == M).sum()) == 2  # the schedule's count holds either way
    got = {i for i in range(8) if out[0, i] == M}
    assert got == {0, 1} if revised else got.isdisjoint({0, 1})  # a large margin keeps them


def test_frozen_tokens_and_last_step() -> None:
    tokens = torch.tensor([[0, 0, M, M, M, M, M, M]])
    frozen = torch.tensor([[True, True] + [False] * 6])
    out = commit_step(tokens, torch.zeros_like(tokens), _probs([2, 3, 4, 5, 6, 7]), None, 0, 4, torch.tensor([2]),
                      mask_id=M, choice_temperature=0.0, revise_margin=0.0, frozen=frozen)
    assert out[0, :2].tolist() == [0, 0]
    last = commit_step(tokens, torch.ones_like(tokens), _probs([]), None, 3, 4, torch.tensor([5]), mask_id=M,
                       choice_temperature=0.0, revise_margin=0.0)
    assert last.tolist() == [[0, 0, 1, 1, 1, 1, 1, 1]]  # the last step commits everything, re-masks nothing


def test_sampler_with_revision_keeps_given_tokens_and_finishes() -> None:
    pipe = tiny_pipeline()
    cond, uncond = pipe.text_conditioning(["a red circle"] * 2, None, 3.0)
    n, mask_id = pipe.generator.config.num_tokens, pipe.generator.config.mask_id
    init = torch.arange(n).remainder(pipe.generator.config.vocab_size).repeat(2, 1)
    keep = torch.zeros(2, n, dtype=torch.bool)
    keep[:, : n // 2] = True
    sampler = MaskGITSampler(6, 3.0, 1.0, 1.0, revise_margin=0.0)
    out = sampler.sample(pipe.generator, cond, uncond, 2, generator=torch.Generator().manual_seed(0),
                         init_tokens=init, keep=keep)
    assert torch.equal(out[keep], init[keep]) and not bool((out == mask_id).any())


def test_revision_margin_shrinks_over_the_steps() -> None:
    """Margin 2: a committed token at log 0.3 (-1.2) outranks new ones (-0.03) at step 0, not at step 6 of 8."""
    tokens = torch.tensor([[0, 0, M, M, M, M, M, M]])
    probs = _probs(confident=[2, 3, 4, 5, 6, 7])
    early, late = (commit_step(tokens, torch.zeros_like(tokens), probs, None, step, 8, torch.tensor([2]), mask_id=M,
                               choice_temperature=0.0, revise_margin=2.0) for step in (0, 6))
    assert early[0, :2].tolist() == [0, 0]
    assert late[0, :2].tolist() == [M, M]


# ---------------------------------------------------------------------------------------------- the one loop
class _Fixed(torch.nn.Module):
    """A 'network' whose logits are the same everywhere: hidden states are the logits, the head is the identity."""

    logits = torch.tensor([0.0, 1.0, 2.0, -1.0])

    def hidden(self, x, prepared):
        return self.logits.expand(*x.shape, 4)

    def head_logits(self, h):
        return h


def test_loop_samples_the_softmax_distribution():
    """One step, fixed logits: token frequencies follow softmax(logits / temperature)."""
    b, n = 256, 64
    u1, u2 = torch.rand(2, 1, b, n, generator=torch.Generator().manual_seed(0))
    out = maskgit_loop(_Fixed(), {}, torch.full((b, n), 4), u1, u2, mask_id=4, steps=1, guidance_scale=1.0,
                       use_cfg=False, temperature=1.0, choice_temperature=0.0)
    freq = torch.bincount(out.flatten(), minlength=5).float() / out.numel()
    assert freq[4] == 0
    assert torch.allclose(freq[:4], torch.softmax(_Fixed.logits, 0), atol=0.02)


def _peaked_model() -> MaskedTransformer:
    g = MaskedTransformer(MaskedConfig(vocab_size=64, dim=32, layers=2, heads=2, text_dim=16)).eval()
    for p in g.parameters():  # larger-than-init weights so the logits are far from uniform
        p.data.normal_(0, 0.3)
    return g


def test_guidance_on_hidden_states_equals_guidance_on_logits():
    """The loop guides the final hidden states and runs the head once; the head is affine, so the guided logits
    are those of guiding the logits themselves."""
    g = _peaked_model()
    with torch.no_grad():
        prep = g.prepare_text(torch.randn(4, 5, 16), torch.ones(4, 5, dtype=torch.bool))
        tokens = torch.randint(0, 65, (2, 64))
        h = g.hidden(torch.cat([tokens, tokens]), prepared=prep)
        c, u = g.head_logits(h).chunk(2)
        via_hidden = g.head_logits(torch.lerp(h[2:], h[:2], 3.0))
    assert torch.allclose(via_hidden, u + 3.0 * (c - u), atol=1e-4)


def test_step0_sharing_equals_recomputing_every_row(monkeypatch):
    """With one negative prompt for all rows, step 0 computes one unconditional row; the tokens equal those of a
    loop that computes them all."""
    pipe = tiny_pipeline()
    for p in pipe.generator.parameters():
        p.data.normal_(0, 0.3)
    cond, uncond = pipe.text_conditioning(["a red circle", "a blue square", "x"], None, 3.0)
    sampler = MaskGITSampler(4, 3.0)
    rows: list[int] = []
    real_hidden = pipe.generator.hidden
    monkeypatch.setattr(pipe.generator, "hidden", lambda x, prepared: rows.append(x.shape[0]) or real_hidden(x, prepared=prepared))
    shared = sampler.sample(pipe.generator, cond, uncond, 3, generator=torch.Generator().manual_seed(1))
    assert rows == [4, 6, 6, 6]
    monkeypatch.setattr("pixlm.sampling.maskgit._same_rows", lambda prepared: False)
    full = sampler.sample(pipe.generator, cond, uncond, 3, generator=torch.Generator().manual_seed(1))
    assert rows[4:] == [6, 6, 6, 6] and torch.equal(shared, full)


def test_callback_previews_follow_the_schedule():
    pipe = tiny_pipeline()
    seen: list[tuple[int, int]] = []
    pipe.generate("a red circle", seed=1, callback=lambda i, k, t: seen.append((i, int((t == 64).sum()))))
    sampler = MaskGITSampler()
    assert [s[0] for s in seen] == list(range(sampler.num_inference_steps))
    assert [s[1] for s in seen] == sampler.schedule(64)


def test_editing_keeps_frozen_tokens_and_scales_the_schedule():
    """init_tokens + keep: kept tokens never move (even with revision), the masked ones follow the schedule
    scaled to their count, and nothing is left masked."""
    pipe = tiny_pipeline()
    cond, uncond = pipe.text_conditioning(["a red circle"] * 2, None, 3.0)
    n, mask_id = 64, 64
    init = torch.arange(n).remainder(64).repeat(2, 1)
    keep = torch.zeros(2, n, dtype=torch.bool)
    keep[0, :40] = True  # row 0 repaints 24 tokens, row 1 all 64
    masked_left: list[list[int]] = []
    for margin in (None, 0.0):
        sampler = MaskGITSampler(4, 3.0, 1.0, 1.0, revise_margin=margin)
        steps: list[list[int]] = []
        out = sampler.sample(pipe.generator, cond, uncond, 2, generator=[torch.Generator().manual_seed(s) for s in (0, 1)],
                             init_tokens=init, keep=keep,
                             callback=lambda i, k, t: steps.append((t == mask_id).sum(1).tolist()))
        assert torch.equal(out[keep], init[keep]) and not bool((out == mask_id).any())
        masked_left = steps
    assert [s[0] for s in masked_left] == MaskGITSampler(4).schedule(24)
    assert [s[1] for s in masked_left] == MaskGITSampler(4).schedule(64)


# ---------------------------------------------------------------------------------------------- seeds
@pytest.mark.parametrize("kind", TINY_GENERATOR_KINDS)
def test_rows_of_a_batch_equal_the_rows_sampled_alone(kind):
    """Row i draws only from generator i: a batch's rows are the rows sampled one by one (reference precision),
    whatever else the batch holds; one generator for a one-row batch draws as a list of one (row 2)."""
    pipe = tiny_pipeline_for(kind, seed=1)
    d = pipe.defaults
    sampler = make_sampler(pipe.generator.kind, 3 if kind != "autoregressive" else d["num_inference_steps"],
                           d["guidance_scale"], d["temperature"], d)
    rows = ["a red circle", "two blue squares above a green triangle", "x"]
    cond, uncond = pipe.text_conditioning(rows, None, d["guidance_scale"])
    with torch.inference_mode():
        batch = sampler.sample(pipe.generator, cond, uncond, 3,
                               generator=[torch.Generator().manual_seed(s) for s in (10, 11, 12)])
        for i, gen in ((0, [torch.Generator().manual_seed(10)]), (2, torch.Generator().manual_seed(12))):
            one_u = take_rows(uncond, i, i + 1) if uncond is not None else None
            alone = sampler.sample(pipe.generator, take_rows(cond, i, i + 1), one_u, 1, generator=gen)
            assert torch.equal(alone[0], batch[i]), (kind, i)


def test_generator_lists_are_checked():
    with pytest.raises(ValueError, match="got 2 generators for 3 rows"):
        check_generators([torch.Generator(), torch.Generator()], 3)
    with pytest.raises(TypeError, match="torch.Generator"):
        check_generators([torch.Generator(), 3], 2)
    with pytest.raises(TypeError, match="got int"):
        rand_rows(7, 1, (2,))
    a = rand_rows([torch.Generator().manual_seed(s) for s in (1, 2)], 2, (3, 4))
    assert a.shape == (2, 3, 4) and torch.equal(a[1], torch.rand((3, 4), generator=torch.Generator().manual_seed(2)))
