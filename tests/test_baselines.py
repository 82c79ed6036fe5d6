"""GAN, VAE and diffusion baselines (and the budgeted training loop every family shares) on tiny configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pixlm.models.codes import CodeSpace
from pixlm.models.vq import VQConfig, VQModel
from pixlm.pipelines.text_to_image import load_pipeline
from pixlm.sampling.cfg import concat_prepared
from pixlm.sampling.diffusion import DiffusionSampler
from pixlm.testing import tiny_generator, tiny_pipeline_for
from pixlm.text.encoder import TextEncoder, TextEncoderConfig
from pixlm.train.common import complete_checkpoints
from pixlm.train.generator import GeneratorTrainConfig, build_pool


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16-scene pool encoded by a tiny tokenizer and a tiny text encoder, both saved beside it."""
    root = tmp_path_factory.mktemp("pool")
    torch.manual_seed(0)
    vq = VQModel(VQConfig(levels=(4, 4, 4), channels=(8, 8, 16, 16)))
    vq.save_pretrained(root / "vq")
    text = TextEncoder(TextEncoderConfig(type="tiny", dim=16, vocab_size=256))
    text.save_pretrained(root / "text")
    with torch.no_grad():
        build_pool(GeneratorTrainConfig(pool=16), vq, text, root)
    return root


def _train(kind: str, pool_dir: Path, out: Path, **overrides):
    common = dict(out=str(out), pool=str(pool_dir / "pool.safetensors"), vq=str(pool_dir / "vq"),
                  text_encoder=str(pool_dir / "text"), steps=2, batch_size=4, log_every=1, ckpt_every=2, eval_n=0)
    common.update(overrides)
    if kind == "gan":
        from pixlm.train.gan import GANTrainConfig, train_gan

        return train_gan(GANTrainConfig(z_dim=8, dim=16, cond_dim=16, **common))
    if kind == "vae":
        from pixlm.train.vae import VAETrainConfig, train_vae

        return train_vae(VAETrainConfig(z_dim=8, dim=16, cond_dim=16, **common))
    if kind == "diffusion":
        from pixlm.train.diffusion import DiffusionTrainConfig, train_diffusion

        return train_diffusion(DiffusionTrainConfig(channels=(16, 32), heads=2, num_inference_steps=3, **common))
    if kind == "autoregressive":
        from pixlm.train.autoregressive import ARTrainConfig, train_autoregressive

        return train_autoregressive(ARTrainConfig(dim=16, layers=1, heads=2, **common))
    from pixlm.train.masked_budget import MaskedBudgetTrainConfig, train_masked_budget

    return train_masked_budget(MaskedBudgetTrainConfig(dim=16, layers=1, heads=2, **common))


@pytest.mark.parametrize("kind", ["gan", "vae", "diffusion", "autoregressive", "masked"])
def test_each_family_trains_two_steps_and_generates(kind: str, pool_dir: Path, tmp_path: Path) -> None:
    path = _train(kind, pool_dir, tmp_path / kind)
    rows = [json.loads(line) for line in (tmp_path / kind / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(np.isfinite(r["loss"]) for r in rows)
    budget = json.loads((tmp_path / kind / "budget.json").read_text())
    assert budget["steps"] == 2 and budget["stopped_by"] == "steps" and budget["generator"] == kind
    assert json.loads((path / "model_index.json").read_text())["generator"] == kind
    pipe = load_pipeline(path)
    a = pipe(["a red circle", "two blue squares"], seed=3)
    b = pipe(["a red circle", "two blue squares"], seed=3)
    assert len(a) == 2 and all(im.size == (64, 64) for im in a)
    assert all((np.asarray(x) == np.asarray(y)).all() for x, y in zip(a, b))


def test_gan_training_resumes_and_updates_both_networks(pool_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    _train("gan", pool_dir, tmp_path / "gan", steps=2)
    first = complete_checkpoints(tmp_path / "gan")[-1]
    _train("gan", pool_dir, tmp_path / "gan", steps=4, resume=True)
    rows = [json.loads(line)["step"] for line in (tmp_path / "gan" / "log.jsonl").read_text().splitlines()]
    assert rows == [1, 2, 3, 4]
    last = complete_checkpoints(tmp_path / "gan")[-1]
    assert last.name == "step-0000004"
    for part in ("raw", "disc"):
        a, b = load_file(str(first / part / "model.safetensors")), load_file(str(last / part / "model.safetensors"))
        assert any(not torch.equal(a[k], b[k]) for k in a), part


def test_budget_stops_training_early_and_is_recorded(pool_dir: Path, tmp_path: Path) -> None:
    _train("vae", pool_dir, tmp_path / "vae", steps=50, max_minutes=1e-9)
    budget = json.loads((tmp_path / "vae" / "budget.json").read_text())
    assert budget["steps"] == 1 and budget["stopped_by"] == "budget" and budget["max_minutes"] == 1e-9
    assert budget["budget_clock"] == "cpu" and budget["wall_s"] >= 0 and budget["samples_seen"] == 4


def test_code_space_round_trips_tokens_and_snaps_noise() -> None:
    cs = CodeSpace((8, 5, 5, 5))
    tokens = torch.randint(0, 1000, (3, 64), generator=torch.Generator().manual_seed(0))
    codes = cs.to_codes(tokens, 8)
    assert codes.shape == (3, 4, 8, 8) and codes.min() >= -1 and codes.max() <= 1
    assert torch.equal(cs.to_tokens(codes), tokens)
    assert torch.equal(cs.to_tokens(codes + 0.2 * (torch.rand_like(codes) - 0.5)), tokens)  # < half a level
    assert set(cs.to_tokens(torch.full((1, 4, 8, 8), 9.0)).tolist()[0]) == {999}  # clamps to the top level
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    cs.snap_ste(x).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))  # straight-through gradient


def test_concat_prepared_pads_and_masks_text() -> None:
    a = {"states": torch.ones(2, 3, 4), "mask": torch.ones(2, 3, dtype=torch.bool)}
    b = {"states": torch.ones(2, 1, 4), "mask": torch.ones(2, 1, dtype=torch.bool)}
    both = concat_prepared(a, b)
    assert both["states"].shape == (4, 3, 4)
    assert both["mask"].tolist() == [[True] * 3] * 2 + [[True, False, False]] * 2
    assert both["states"][2:, 1:].abs().sum() == 0
    with pytest.raises(ValueError, match="cannot stack"):
        concat_prepared(a, {"pooled": torch.ones(2, 4)})


@pytest.mark.parametrize("scheduler", ["ddim", "dpmsolver"])
def test_diffusion_sampler_runs_requested_steps_deterministically(scheduler: str) -> None:
    torch.manual_seed(0)
    model = tiny_generator("diffusion").eval()
    cond = model.prepare_text(torch.randn(2, 3, 16), torch.ones(2, 3, dtype=torch.bool))
    uncond = model.prepare_text(torch.zeros(2, 1, 16), torch.ones(2, 1, dtype=torch.bool))
    seen: list[int] = []
    sampler = DiffusionSampler(num_inference_steps=4, guidance_scale=2.0, scheduler=scheduler)
    a = sampler.sample(model, cond, uncond, 2, generator=torch.Generator().manual_seed(1),
                       callback=lambda i, k, tok: seen.append(i))
    b = sampler.sample(model, cond, uncond, 2, generator=torch.Generator().manual_seed(1))
    c = sampler.sample(model, cond, uncond, 2, generator=torch.Generator().manual_seed(2))
    assert seen == [0, 1, 2, 3]
    assert a.shape == (2, 64) and int(a.max()) < 64
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="scheduler"):
        DiffusionSampler(scheduler="euler")


@pytest.mark.parametrize("kind", ["gan", "vae"])
def test_one_shot_generators_use_one_forward_and_temperature_zero_is_the_mode(kind: str) -> None:
    pipe = tiny_pipeline_for(kind)
    calls: list[int] = []
    pipe("a red circle", seed=0, callback=lambda i, k, tok: calls.append(k))
    assert calls == [1]
    modes = [np.asarray(im) for im in pipe.generate("a red circle", seed=0, temperature=0.0).images
             + pipe.generate("a red circle", seed=9, temperature=0.0).images]
    assert (modes[0] == modes[1]).all()
    noisy = [np.asarray(pipe("a red circle", seed=s)[0]) for s in (0, 9)]
    assert (noisy[0] != noisy[1]).any()


def test_vae_loss_is_finite_and_has_kl_term() -> None:
    from pixlm.models.vae import vae_loss

    model = tiny_generator("vae")
    loss, parts = vae_loss(model, torch.randint(0, 64, (3, 64)), torch.randn(3, 4, 16),
                           torch.ones(3, 4, dtype=torch.bool), torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and parts["kl"] >= 0 and parts["nll"] > 0
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
