"""The MaskGIT commit rule (``commit_step``): which tokens stay, which return to the mask."""

from __future__ import annotations

import pytest
import torch

from pixlm.sampling.maskgit import MaskGITSampler, commit_step
from pixlm.testing import tiny_pipeline

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
