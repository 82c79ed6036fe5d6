"""Training loops on tiny configs: they run, write what they promise, and resume where they stopped."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pixlm.models.vq import VQModel
from pixlm.pipelines.text_to_image import load_pipeline
from pixlm.train.common import complete_checkpoints
from pixlm.train.generator import GeneratorTrainConfig, train_generator
from pixlm.train.loop import TrainLoop, lr_at
from pixlm.train.tokenizer import TokenizerTrainConfig, train_tokenizer

TINY_VQ = dict(channels=(8, 8, 16, 16), levels=(4, 4, 4), batch_size=4, log_every=1, ckpt_every=2)


def _steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tokenizer_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("tok")
    train_tokenizer(TokenizerTrainConfig(out=str(run), steps=4, **TINY_VQ))
    return run


def test_tokenizer_run_writes_model_logs_and_checkpoints(tokenizer_run: Path) -> None:
    assert (tokenizer_run / "model" / "model.safetensors").is_file()
    assert (tokenizer_run / "loss.png").is_file() and (tokenizer_run / "samples.png").is_file()
    rows = [json.loads(line) for line in (tokenizer_run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(0 < r["codebook_usage"] <= 1 and r["perplexity"] >= 1 for r in rows)
    assert [p.name for p in complete_checkpoints(tokenizer_run)] == ["step-0000002", "step-0000004"]
    vq = VQModel.from_pretrained(tokenizer_run / "model")
    tokens = vq.encode(torch.zeros(2, 3, 64, 64))
    assert tokens.shape == (2, 8, 8) and int(tokens.max()) < vq.vocab_size


def test_tokenizer_grid_follows_the_number_of_channel_entries(tmp_path: Path) -> None:
    """Three channel entries halve twice: a 16×16 token grid (the emoji tokenizer); bf16 autocast trains it."""
    from pixlm.models.vq import VQConfig

    run = tmp_path / "tok16"
    train_tokenizer(TokenizerTrainConfig(out=str(run), steps=2, channels=(8, 16, 16), levels=(4, 4, 4), res_blocks=1,
                                         batch_size=2, log_every=1, ckpt_every=2, mixed_precision="bf16"))
    vq = VQModel.from_pretrained(run / "model")
    assert vq.config.grid == 16
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    tokens = vq.encode(x)
    assert tokens.shape == (2, 16, 16) and vq.decode(tokens).shape == (2, 3, 64, 64)
    assert VQConfig(channels=(8, 8, 16, 16)).grid == 8 and VQConfig(channels=(8, 8)).grid == 32
    gen = train_generator(GeneratorTrainConfig(out=str(tmp_path / "gen"), tokenizer=str(run / "model"),
                                               text_encoder="tiny", pool=8, steps=1, batch_size=2, dim=16, layers=1,
                                               heads=2, log_every=1, eval_every=1000, ckpt_every=1))
    pipe = load_pipeline(gen)  # the generator follows the tokenizer's grid
    assert pipe.generator.config.grid == 16
    assert pipe("a red circle", num_inference_steps=2, seed=0)[0].size == (64, 64)
    for bad, words in [((8,), "2 to 5 entries"), ((8, 8, 8, 8, 8, 8), "2 to 5 entries"), ((8, 12, 16), "multiple of 8")]:
        with pytest.raises(ValueError, match=words):
            VQConfig(channels=bad)


def test_tokenizer_resume_continues_from_last_checkpoint(tokenizer_run: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "tok"
    shutil.copytree(tokenizer_run, run)
    shutil.rmtree(run / "checkpoints" / "step-0000004")  # as if it crashed between step 2 and 4
    (run / "checkpoints" / "step-0000005-partial").mkdir()  # an interrupted write has no .complete marker
    train_tokenizer(TokenizerTrainConfig(out=str(run), steps=6, resume=True, **TINY_VQ))
    assert _steps(run) == [1, 2, 3, 4, 5, 6]  # log lines after step 2 were rewritten, not duplicated
    assert complete_checkpoints(run)[-1].name == "step-0000006"


def test_decoder_finetune_keeps_tokens_fixed(tokenizer_run: Path, tmp_path: Path) -> None:
    train_tokenizer(TokenizerTrainConfig(out=str(tmp_path / "dec"), steps=2, init_from=str(tokenizer_run / "model"),
                                         freeze_encoder=True, **TINY_VQ))
    a, b = VQModel.from_pretrained(tokenizer_run / "model"), VQModel.from_pretrained(tmp_path / "dec" / "model")
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    assert torch.equal(a.encode(x), b.encode(x))
    assert any(not torch.equal(p, q) for p, q in zip(a.decoder.parameters(), b.decoder.parameters()))
    assert a.with_decoder_of(b) is b  # a generator trained on a's tokens may draw with b's decoder
    with torch.no_grad():
        next(b.encoder.parameters()).add_(0.01)
    with pytest.raises(ValueError, match="encoder differs"):
        a.with_decoder_of(b)


def test_generator_training_writes_a_loadable_pipeline_and_resumes(tokenizer_run: Path, tmp_path: Path) -> None:
    cfg = dict(out=str(tmp_path / "gen"), tokenizer=str(tokenizer_run / "model"), text_encoder="tiny", pool=32,
               batch_size=4, dim=16, layers=1, heads=2, log_every=1, eval_every=1000, ckpt_every=2)
    train_generator(GeneratorTrainConfig(steps=2, **cfg))
    train_generator(GeneratorTrainConfig(steps=4, resume=True, **cfg))
    assert _steps(tmp_path / "gen") == [1, 2, 3, 4]
    pipe = load_pipeline(tmp_path / "gen" / "pipeline")
    assert len(pipe("a red circle", num_images_per_prompt=2, num_inference_steps=2, seed=0)) == 2


def test_generator_phases_stop_and_warm_restart(tokenizer_run: Path, tmp_path: Path) -> None:
    """The bundle recipe's phases: stop_at ends a run early; the next phase resumes on its own schedule."""
    from pixlm.train.generator import parse_phases

    cfg = dict(out=str(tmp_path / "gen"), tokenizer=str(tokenizer_run / "model"), text_encoder="tiny", pool=32,
               batch_size=4, dim=16, layers=1, heads=2, log_every=1, eval_every=1000, ckpt_every=10, warmup=0)
    train_generator(GeneratorTrainConfig(steps=6, stop_at=2, **cfg))
    assert _steps(tmp_path / "gen") == [1, 2]
    train_generator(GeneratorTrainConfig(steps=3, resume=True, **cfg))
    rows = [json.loads(line) for line in (tmp_path / "gen" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[1]["lr"] > rows[2]["lr"]  # step 3 closes the 3-step schedule: its LR is the floor
    assert parse_phases("5000,15000:6250,13000") == [(5000, 5000), (15000, 6250), (13000, 13000)]
    with pytest.raises(ValueError, match="must stop after step 5000"):
        parse_phases("5000,4000")


def test_loose_pool_pairs_pool_scenes_with_informal_prompts(tokenizer_run: Path, tmp_path: Path) -> None:
    """A later phase can add informal prompts for the first N pool scenes: same tokens, new text, base cache kept."""
    from pixlm.train.common import load_text_encoder
    from pixlm.train.generator import build_pool

    run = tmp_path / "gen"
    cfg = dict(out=str(run), tokenizer=str(tokenizer_run / "model"), text_encoder="tiny", pool=12, batch_size=4,
               dim=16, layers=1, heads=2, log_every=1, eval_every=1000, ckpt_every=2)
    train_generator(GeneratorTrainConfig(steps=2, **cfg))
    base = (run / "pool.safetensors").read_bytes()
    train_generator(GeneratorTrainConfig(steps=4, resume=True, loose_pool=5, **cfg))
    assert _steps(run) == [1, 2, 3, 4] and (run / "pool.safetensors").read_bytes() == base
    prompts = (run / "pool_loose-5.txt").read_text().splitlines()
    captions = (run / "pool_captions.txt").read_text().splitlines()
    assert len(prompts) == 5 and prompts != captions[:5]
    torch.manual_seed(0)  # the tiny encoder's random weights, as training made them (seed 0)
    vq, text = VQModel.from_pretrained(tokenizer_run / "model"), load_text_encoder("tiny")
    pool = build_pool(GeneratorTrainConfig(loose_pool=5, **cfg), vq, text, run)
    assert pool["tokens"].shape[0] == 17 and torch.equal(pool["tokens"][12:], pool["tokens"][:5])
    assert len(pool["offsets"]) == 18 and int(pool["offsets"][-1]) == pool["text"].shape[0]
    states, mask = text.encode([prompts[4]], use_cache=False)
    # the pool encodes its prompts in padded batches, so float rounding may flip an fp16 rounding: one fp16 step apart
    assert torch.allclose(pool["text"][pool["offsets"][16]:].float(), states[0][mask[0]].float(), rtol=2e-3, atol=2e-3)
    with pytest.raises(ValueError, match="loose_pool=13"):
        build_pool(GeneratorTrainConfig(loose_pool=13, **cfg), vq, text, run)
    both = build_pool(GeneratorTrainConfig(loose_pool=5, relation_pool=3, **cfg), vq, text, run)
    assert both["tokens"].shape[0] == 20 and torch.equal(both["tokens"][:17], pool["tokens"])
    assert len((run / "pool_relations-3.txt").read_text().splitlines()) == 3
    assert int(both["offsets"][-1]) == both["text"].shape[0]


def test_bundle_phases_add_extra_pairs_from_their_start_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The recipe's later phases add informal prompts / group-relation scenes; earlier phases do not."""
    import pixlm.train.generator as generator
    from pixlm.train import bundle

    seen = []
    monkeypatch.setattr(generator, "train_generator", lambda cfg: seen.append(cfg))
    bundle._generator(tmp_path, tmp_path / "vq", generator.parse_phases("5,10:7,10:8,10"), pool=40, loose_pool=20,
                      loose_from=7, relation_pool=5, relation_from=8)
    assert [(c.steps, c.stop_at, c.loose_pool, c.relation_pool) for c in seen] == [
        (5, 5, 0, 0), (10, 7, 0, 0), (10, 8, 20, 0), (10, 10, 20, 5)]


def test_one_schedule_warms_up_then_decays_by_steps_or_by_progress() -> None:
    assert [lr_at(s, 1.0, 4, 20) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(4, 1.0, 4, 20) == 1.0 and lr_at(20, 1.0, 4, 20) == pytest.approx(0.05)
    assert lr_at(12, 1.0, 4, 20) == pytest.approx(0.525)  # halfway through the decay: half-way to the 5% floor
    assert lr_at(12, 1.0, 4, 20, progress=1.0) == pytest.approx(0.05)  # a spent time budget ends the decay early
    assert lr_at(2, 1.0, 4, 20, progress=1.0) == 0.75  # the warmup is counted in steps either way


@dataclass
class ToyConfig:
    out: str
    steps: int = 6
    warmup: int = 2
    log_every: int = 2
    ckpt_every: int = 10
    seed: int = 0
    resume: bool = False


def _toy_run(cfg: ToyConfig, stop_after: int = 0) -> TrainLoop:
    """A tiny masked generator fitted by the loop, its two optimizer groups at different rates."""
    from pixlm.models.masked import MaskedConfig, MaskedTransformer
    from pixlm.train.loop import param_groups

    loop = TrainLoop(cfg)
    model = MaskedTransformer(MaskedConfig(vocab_size=16, dim=8, layers=1, heads=2, text_dim=8))
    groups = param_groups(model, 0.01)
    groups[0]["lr"], groups[1]["lr"] = 0.1, 0.01
    (model,) = loop.prepare({"raw": model}, torch.optim.AdamW(groups), ema=True)

    def step_fn(step: int) -> dict:
        gen = torch.Generator().manual_seed(step)
        tokens = torch.randint(0, 16, (2, 64), generator=gen)
        logits = model(tokens, torch.randn(2, 3, 8, generator=gen), torch.ones(2, 3, dtype=torch.bool))
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten())
        loop.accelerator.backward(loss)
        return {"loss": loss.detach(), "first_token": float(tokens[0, 0])}

    loop.fit(step_fn, ema_decay=0.9, clip_norm=1.0, evaluate=lambda done: {"evaluated": done},
             eval_every=4, stop=loop.stop_when(stop_after=stop_after))
    return loop


def test_loop_stops_checkpoints_and_resumes_to_the_straight_run(tmp_path: Path) -> None:
    _toy_run(ToyConfig(out=str(tmp_path / "a")))
    rows = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6] and [r.get("evaluated") for r in rows] == [None, 4, 6]
    assert rows[0]["lr"] == pytest.approx(lr_at(1, 0.1, 2, 6))  # the first group's rate is logged
    assert [p.name for p in complete_checkpoints(tmp_path / "a")] == ["step-0000006"]

    _toy_run(ToyConfig(out=str(tmp_path / "b")), stop_after=3)
    rows = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert rows[-1]["stopped"] == "stop_after=3 reached" and rows[-1]["evaluated"] == 3
    assert [p.name for p in complete_checkpoints(tmp_path / "b")] == ["step-0000003"]
    again = _toy_run(ToyConfig(out=str(tmp_path / "b"), resume=True), stop_after=3)  # the same command once more
    assert again.start == 3 and [p.name for p in complete_checkpoints(tmp_path / "b")] == ["step-0000003"]
    resumed = _toy_run(ToyConfig(out=str(tmp_path / "b"), resume=True))
    assert resumed.start == 3
    for group, want in zip(resumed.optimizer.param_groups, (0.1, 0.01)):  # each group back on its own schedule
        assert group["lr"] == pytest.approx(lr_at(5, want, 2, 6))
    for name in ("model", "raw"):  # EMA and trained weights, after a stop and a resume, as if never interrupted
        a = load_file(str(complete_checkpoints(tmp_path / "a")[-1] / name / "model.safetensors"))
        b = load_file(str(complete_checkpoints(tmp_path / "b")[-1] / name / "model.safetensors"))
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"{name}.{k}")
