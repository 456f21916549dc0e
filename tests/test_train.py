import dataclasses
import json
import logging
import os
import signal

import numpy as np
import pytest
import torch
from test_train_helpers import debug_config, prepare_tiny

from gasp import constants as C
from gasp.config import TrainConfig
from gasp.data.targets import QUERY_MASK
from gasp.errors import BadInputError, ConfigError
from gasp.models import from_preset
from gasp.models.heads import CorrespondenceHeads, capture_visual_tokens
from gasp.train import apply_lora, train
from gasp.training import data as tdata
from gasp.training import objective as tobj
from gasp.training.checkpoint import list_checkpoints

N = 16  # tokens per frame of a 32x32 frame of the tiny preset (4x4 grid)


def _objective(gradient_checkpointing=False, seed=0):
    torch.manual_seed(seed)
    adapter = from_preset("tiny-qwen2.5-vl")
    adapter.targets = adapter.lora_target_modules()
    apply_lora(adapter, TrainConfig.from_name("debug"))
    for name, p in adapter.model.named_parameters():
        if "lora_B" in name:  # peft starts B at 0; make LoRA matter
            torch.nn.init.normal_(p, std=0.02)
    if gradient_checkpointing:
        adapter.model.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False}
        )
    adapter.model.train()
    heads = CorrespondenceHeads.from_adapter(adapter, "all", 16)
    return adapter, tobj.GaspObjective(adapter.model, adapter.attention_inputs(), heads, 0.1, 1e-6, 0.3, 1.0)


def _inputs(adapter, seed=0):
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 255, (3, 32, 32, 3), dtype=np.uint8) for _ in range(2)]
    batch = adapter.build_inputs(frames, ["describe"] * 2, ["a red room", "blue"])
    targets = {
        C.MATCH_INDEX: torch.from_numpy(rng.integers(0, N, (2, 3, N))),
        C.MATCH_VALID: torch.from_numpy(rng.random((2, 3, N)) > 0.2),
        C.MATCH_DEPTH: torch.rand(2, 3, N) + 1,
        C.TOKEN_DEPTH: torch.rand(2, 3, N) + 1,
    }
    return batch, targets


def test_lora_only_on_the_llm_decoder():
    adapter, _ = _objective()
    lora = [n for n, m in adapter.model.named_modules() if hasattr(m, "lora_A")]
    assert lora and set(lora) == set(adapter.targets)
    assert not any("visual" in n for n in lora)


def test_heads_do_not_change_model_outputs():
    adapter, obj = _objective()
    adapter.model.eval()
    batch, _ = _inputs(adapter)
    inputs = {k: v for k, v in batch.inputs.items() if k != "labels"}
    with torch.no_grad():
        ref = adapter.model(**inputs).logits
        modules = dict(enumerate(adapter.attention_inputs()))
        with capture_visual_tokens(modules, batch.visual_positions) as captured:
            hooked = adapter.model(**inputs).logits
    assert torch.equal(ref, hooked) and set(captured) == {0, 1}
    assert captured[0].shape == (2, 3, N, adapter.hidden_size)


def test_gradients_only_in_lora_and_heads():
    adapter, obj = _objective()
    batch, targets = _inputs(adapter)
    loss, logs = obj(batch.inputs, batch.visual_positions, targets)
    loss.backward()
    with_grad = {n for n, p in obj.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad and all(("lora_" in n) or n.startswith("heads.") for n in with_grad)
    assert {n for n, _ in obj.heads.named_parameters()} == {
        n[len("heads.") :] for n in with_grad if n.startswith("heads.")
    }
    assert all(
        not p.requires_grad for n, p in obj.model.named_parameters() if "visual" in n or "lora_" not in n
    )
    assert set(logs) >= {"lm", "corr", "depth", "corr/layer_00", "depth/layer_01"}
    expected = logs["lm"] + 0.3 * logs["corr"] + 1.0 * logs["depth"]
    assert torch.allclose(loss.detach(), expected)
    # The geometric losses alone also reach the LoRA weights (through the visual tokens).
    obj.zero_grad()
    obj.lambda_corr, obj.lambda_depth = 1.0, 1.0
    loss, logs = obj(batch.inputs, batch.visual_positions, targets)
    (loss - logs["lm"]).backward()
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0
        for n, p in obj.model.named_parameters()
        if "lora_A" in n
    )


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    results = []
    for gc in (False, True):
        adapter, obj = _objective(gradient_checkpointing=gc)
        batch, targets = _inputs(adapter)
        loss, _ = obj(batch.inputs, batch.visual_positions, targets)
        loss.backward()
        results.append(
            (loss.detach(), {n: p.grad.clone() for n, p in obj.named_parameters() if p.grad is not None})
        )
    (l0, g0), (l1, g1) = results
    assert torch.allclose(l0, l1) and set(g0) == set(g1)
    assert all(torch.allclose(g0[k], g1[k], atol=1e-6) for k in g0)


def test_language_only_batch_skips_heads():
    adapter, obj = _objective()
    batch, _ = _inputs(adapter)
    loss, logs = obj(batch.inputs, batch.visual_positions, None)
    assert set(logs) == {"lm"} and torch.equal(loss.detach(), logs["lm"])
    loss.backward()
    # Idle heads get an exact-zero gradient, not none: every engine (torch AdamW, DeepSpeed's flat
    # ZeRO partitions) then updates them alike (tests/test_train_deepspeed.py compares the tensors).
    grads = [p.grad for p in obj.heads.parameters()]
    assert grads and all(g is not None and not g.any() for g in grads)
    obj.zero_grad(set_to_none=True)
    heads = obj.heads
    with obj.without_heads():  # the benchmarks' LM-only baseline: heads untouched
        obj(batch.inputs, batch.visual_positions, None)[0].backward()
    assert obj.heads is heads and all(p.grad is None for p in heads.parameters())


def test_language_only_interleaving():
    flags = [tdata.is_language_only(i, 0.25) for i in range(8)]
    assert flags == [False, False, False, True] * 2
    assert not any(tdata.is_language_only(i, 0.0) for i in range(5))


def _sequence(sid, frames=3, n=N):
    rng = np.random.default_rng(0)
    return {
        C.FRAMES: rng.integers(0, 255, (frames, 32, 32, 3), dtype=np.uint8),
        C.SCENE: "not-synthetic",
        C.SEQUENCE_ID: sid,
        C.MATCH_INDEX: np.zeros((frames, n), np.int64),
        C.MATCH_VALID: np.ones((frames, n), bool),
        C.MATCH_DEPTH: np.ones((frames, n), np.float32),
        C.TOKEN_DEPTH: np.ones((frames, n), np.float32),
        QUERY_MASK: np.ones(n, bool),
    }


def test_token_count_mismatch_names_the_sequence_and_both_counts():
    adapter = from_preset("tiny-qwen2.5-vl")
    ok = tdata.make_batch(adapter, [_sequence("a"), _sequence("b")], "p", True)
    assert ok.targets[C.MATCH_INDEX].shape == (2, 3, N) and ok.visual_positions.shape == (2, 3, 4, 4)
    assert ok.targets[QUERY_MASK].shape == (2, N)
    with pytest.raises(BadInputError, match=r"'scene-7/seq-2'.*36 tokens.*16 \(4x4\)"):
        tdata.make_batch(adapter, [_sequence("scene-7/seq-2", n=36)], "p", True)
    with pytest.raises(BadInputError, match=r"different frame counts \[3, 4\]"):
        tdata.make_batch(adapter, [_sequence("a"), _sequence("b", frames=4)], "p", True)


# ------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare_tiny(tmp_path_factory.mktemp("data") / "prepared")


def _cfg(prepared, out, **kw):
    return debug_config(prepared, out, **{"max_steps": 4, "save_every": 2, "batch_size": 1, **kw})


def _losses(history):
    return [(r["step"], r["loss"], r.get("corr"), r["lm"]) for r in history]


@pytest.mark.slow
def test_resume_reaches_the_same_losses(prepared, tmp_path):
    full = train(_cfg(prepared, tmp_path / "full"))
    first = train(_cfg(prepared, tmp_path / "split", stop_at_step=2))
    assert first.stopped_early and [c.name for c in list_checkpoints(tmp_path / "split")] == ["step-0000002"]
    with pytest.raises(ConfigError, match="--resume"):
        train(_cfg(prepared, tmp_path / "split"))
    resumed = train(_cfg(prepared, tmp_path / "split"), resume=True)
    assert len(full.history) == 4 and [r["step"] for r in resumed.history] == [1, 2, 3, 4]
    a, b = np.array(_losses(full.history), float), np.array(_losses(resumed.history), float)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert any((tmp_path / "full" / "logs").glob("events.out.tfevents.*"))  # TensorBoard
    logged = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 3, 4]
    assert sorted(p.name for p in (tmp_path / "full" / "checkpoints").iterdir()) == [
        "step-0000002",
        "step-0000004",
    ]


@pytest.mark.slow
def test_nonfinite_loss_skips_the_step_and_sigterm_saves(prepared, tmp_path, monkeypatch, caplog):
    real = tobj.lm_loss_per_sequence
    calls = {"n": 0}

    def flaky(logits, labels):
        calls["n"] += 1
        loss, count = real(logits, labels)
        if calls["n"] == 2:
            return loss * float("nan"), count
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler would: save and stop after this step
        return loss, count

    monkeypatch.setattr(tobj, "lm_loss_per_sequence", flaky)
    with caplog.at_level(logging.WARNING, logger="gasp.train"):
        result = train(_cfg(prepared, tmp_path / "run", max_steps=10, save_every=1, keep_last=1))
    assert [r["skipped"] for r in result.history] == [0.0, 1.0, 0.0]
    assert "non-finite loss" in caplog.text
    assert result.stopped_early and result.checkpoint.name == "step-0000003"
    assert [c.name for c in (tmp_path / "run" / "checkpoints").iterdir()] == ["step-0000003"]  # keep_last=1
    assert all(np.isfinite(r["loss"]) for i, r in enumerate(result.history) if i != 1)


def test_optimizer_groups_and_schedule():
    from gasp.train import build_optimizer, build_scheduler

    adapter, obj = _objective()
    cfg = dataclasses.replace(TrainConfig.from_name("debug"), lr=1e-3, warmup_steps=2, max_steps=6)
    opt = build_optimizer(obj, cfg)
    lora, heads = opt.param_groups
    assert {id(p) for p in heads["params"]} == {id(p) for p in obj.heads.parameters()}
    assert all(p.requires_grad for p in lora["params"]) and len(lora["params"]) == 2 * len(adapter.targets)
    sched = build_scheduler(opt, cfg)
    lrs = []
    for _ in range(cfg.max_steps):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    np.testing.assert_allclose(
        [l for l, _ in lrs],
        [
            1e-3 / 3,
            2e-3 / 3,
            1e-3,
            1e-3 * 0.5 * (1 + np.cos(np.pi / 4)),
            5e-4,
            1e-3 * 0.5 * (1 + np.cos(3 * np.pi / 4)),
        ],
        rtol=1e-6,
    )
    assert all(abs(h - 4 * l) < 1e-12 for l, h in lrs)


@pytest.mark.slow
def test_full_finetune_trains_the_vision_tower_and_resumes(prepared, tmp_path):
    from gasp.models import load_adapter
    from gasp.training.state import read_trainable

    kw = dict(
        finetune="full",
        qk_init="tied_orthogonal",
        model_overrides=("num_kv_heads=4",),
        freeze_qk=True,
        lr=1e-2,
        lm_fraction=0.0,
    )
    whole = train(_cfg(prepared, tmp_path / "whole", **kw))
    first = train(_cfg(prepared, tmp_path / "split", stop_at_step=2, **kw))
    assert first.stopped_early
    resumed = train(_cfg(prepared, tmp_path / "split", **kw), resume=True)
    a, b = np.array(_losses(whole.history), float), np.array(_losses(resumed.history), float)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    ckpt = whole.checkpoint
    assert not (ckpt / "adapter").exists()
    saved = read_trainable(ckpt)
    base = load_adapter(tmp_path / "whole" / "base").model.state_dict()
    trained = {k[len("model.") :]: v for k, v in saved.items() if k.startswith("model.")}
    visual = [k for k in trained if "visual" in k]
    assert visual and all(k in base for k in trained)
    assert any(not torch.equal(trained[k], base[k]) for k in visual)  # the vision tower trained
    assert not any("lora" in k for k in trained)
    qk = [k for k in base if ".layers." in k and "visual" not in k and ("q_proj" in k or "k_proj" in k)]
    assert qk and not set(qk) & set(trained)  # --freeze-qk keeps them out of training
    assert any(k.startswith("heads.") for k in saved)


def test_freeze_qk_covers_the_qk_norms_of_qwen3():
    from gasp.training.setup import frozen_qk_names

    names = frozen_qk_names(from_preset("tiny-qwen3-vl"))
    assert any(n.endswith("q_norm.weight") for n in names) and any(n.endswith("k_norm.weight") for n in names)
    assert any(n.endswith("q_proj.weight") for n in names)
    assert not any("norm" in n for n in frozen_qk_names(from_preset("tiny-qwen2.5-vl")))


def test_finetune_and_qk_init_are_checked():
    with pytest.raises(ConfigError, match="--finetune"):
        TrainConfig(finetune="partial")
    with pytest.raises(ConfigError, match="--qk-init"):
        TrainConfig(qk_init="identity")
    with pytest.raises(ConfigError, match="--model-overrides"):
        TrainConfig(model_overrides=("num_kv_heads",))
    assert TrainConfig(model_overrides=("num_kv_heads=4", "rope=x")).parsed_model_overrides() == {
        "num_kv_heads": 4,
        "rope": "x",
    }
    for preset in ("debug", "qwen2.5-vl-7b", "llava-next-video-7b"):
        cfg = TrainConfig.from_name(preset)
        assert cfg.finetune == "lora" and cfg.qk_init == "hf" and not cfg.freeze_qk


def _qa_annotations(root):
    """Three image QA records (LLaVA format) and one whose image is missing."""
    from PIL import Image

    records = []
    for i in range(3):
        Image.new("RGB", (40 + 8 * i, 30), (60 * i, 120, 200)).save(root / f"img{i}.png")
        conv = [
            {"from": "human", "value": f"<image>\nWhat colour is picture {i}?"},
            {"from": "gpt", "value": "Blue."},
        ]
        records.append({"id": f"qa{i}", "image": f"img{i}.png", "conversations": conv})
    records.append({"id": "gone", "image": "missing.png", "conversations": records[0]["conversations"]})
    path = root / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.slow
def test_general_qa_feeds_language_only_batches_and_resumes(prepared, tmp_path, monkeypatch):
    qa = _qa_annotations(tmp_path)
    used = []
    real = tdata.make_qa_batch
    monkeypatch.setattr(
        tdata, "make_qa_batch", lambda adapter, samples: used.extend(samples) or real(adapter, samples)
    )
    kw = dict(qa_data=str(qa), lm_fraction=0.5)
    whole = train(_cfg(prepared, tmp_path / "whole", **kw))
    assert len(used) == 2 and {s.id for s in used} <= {"qa0", "qa1", "qa2"}  # steps 2 and 4 are language-only
    assert all(s.frames.shape[1:] == (32, 32, 3) and s.answer == "Blue." for s in used)
    train(_cfg(prepared, tmp_path / "split", stop_at_step=2, **kw))
    saved = json.loads((tmp_path / "split" / "checkpoints" / "step-0000002" / "qa-rank0.json").read_text())
    assert saved["consumed"] >= 1
    resumed = train(_cfg(prepared, tmp_path / "split", **kw), resume=True)
    assert [s.id for s in used[2:]] == [s.id for s in used[:2]]  # the same QA samples, in the same order
    a, b = np.array(_losses(whole.history), float), np.array(_losses(resumed.history), float)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_launch_that_accelerate_miscounts_is_refused(tmp_path, monkeypatch):
    """Every process would act as rank 0 of 1 (as accelerate 1.15 did for DeepSpeed on CPU processes)."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="2 processes were launched but accelerate counts 1"):
        train(debug_config(tmp_path / "data", tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_a_deepspeed_launch_that_falls_back_to_ddp_is_refused(monkeypatch):
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from gasp.training.sharding import check_deepspeed_ran

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(ConfigError, match="without ACCELERATE_USE_CPU=1"):
        check_deepspeed_ran(SimpleNamespace(distributed_type=DistributedType.MULTI_CPU))
    check_deepspeed_ran(SimpleNamespace(distributed_type=DistributedType.DEEPSPEED))
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "false")
    check_deepspeed_ran(SimpleNamespace(distributed_type=DistributedType.MULTI_CPU))
