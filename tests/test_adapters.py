"""Adapter contract tests: token mapping per family, labels, padding, generation, registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gasp.errors import BadInputError, ConfigError
from gasp.models import IGNORE_INDEX, PRESETS, adapter_class, from_preset, load_adapter

TINY = sorted(name for name in PRESETS if name.startswith("tiny-"))

# Modules whose output carries information between vision patches; zeroing them makes the
# vision tower purely local (each patch only sees itself), while patch embedding, window
# reordering, merging / pixel shuffle, projector and sequence placement stay real.
_MIXERS = ("attn.proj", "self_attn.out_proj", "attention.projection_layer", "attn.o_proj")


def make_vision_local(adapter) -> int:
    """Zero the attention output projections of the vision tower; returns how many were zeroed."""
    decoder_names = {n for n, m in adapter.model.named_modules() if m is adapter.decoder()}
    count = 0
    for name, module in adapter.model.named_modules():
        if any(name.startswith(d) for d in decoder_names):
            continue
        if isinstance(module, torch.nn.Linear) and name.endswith(_MIXERS):
            torch.nn.init.zeros_(module.weight)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
            count += 1
    return count


def decoder_input_embeds(adapter, inputs) -> torch.Tensor:
    """The inputs_embeds the LLM decoder receives (captured by a forward pre-hook)."""
    seen = {}

    def hook(module, args, kwargs):
        seen["embeds"] = kwargs["inputs_embeds"].detach().clone()

    handle = adapter.decoder().register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            adapter.model(**inputs)
    finally:
        handle.remove()
    return seen["embeds"]


def pick_grid(adapter, wanted):
    """``wanted`` when the family accepts any grid (Qwen), else its one fixed grid (LLaVA)."""
    try:
        adapter.image_size_for_grid(wanted)
        return tuple(wanted)
    except (BadInputError, ConfigError):
        return adapter.default_grid


def frames_for(adapter, num_frames, grid, seed=0):
    h, w = adapter.image_size_for_grid(pick_grid(adapter, grid))
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(num_frames, h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module", params=TINY)
def adapter(request):
    if request.param == "tiny-smolvlm":
        pytest.importorskip("num2words", reason="SmolVLMProcessor needs the num2words package")
    torch.manual_seed(0)
    return from_preset(request.param)


def test_token_mapping_changes_exactly_the_predicted_token(adapter):
    """Change one cell of one frame: exactly the predicted visual token changes in the LLM input."""
    assert make_vision_local(adapter) > 0
    grid = pick_grid(adapter, (4, 5))
    frames_a = frames_for(adapter, 3, grid, seed=1)
    frames_b = frames_for(adapter, 3, grid, seed=2)
    h, w = frames_a.shape[1:3]
    ch, cw = h // grid[0], w // grid[1]
    prompts = ["Where is the chair?", "Describe the whole room in a few words please."]
    base = adapter.build_inputs([frames_a, frames_b], prompts)
    assert base.grid == grid and base.visual_positions.shape == (2, 3, *grid)
    ref = decoder_input_embeds(adapter, base.inputs)
    gh, gw = grid
    for sample, frame, row, col in [(0, 0, 0, 0), (0, 1, 2, 3), (1, 2, gh - 1, gw - 1), (1, 0, 1, 0)]:
        edited = [frames_a.copy(), frames_b.copy()]
        block = edited[sample][frame, row * ch : (row + 1) * ch, col * cw : (col + 1) * cw]
        edited[sample][frame, row * ch : (row + 1) * ch, col * cw : (col + 1) * cw] = 255 - block
        batch = adapter.build_inputs(edited, prompts)
        assert torch.equal(batch.visual_positions, base.visual_positions)
        out = decoder_input_embeds(adapter, batch.inputs)
        changed = (out - ref).abs().amax(-1) > 1e-6
        expected = torch.zeros_like(changed)
        expected[sample, base.visual_positions[sample, frame, row, col]] = True
        if adapter.family == "llava-next-video":
            # anyres: the base image holds a second copy of every cell, in raster order first
            run = torch.nonzero(base.inputs["input_ids"][sample] == adapter.image_token_id).flatten()
            per_frame = run.numel() // 3
            expected[sample, run[frame * per_frame + row * gw + col]] = True
        assert torch.equal(changed, expected), (sample, frame, row, col, changed.nonzero().tolist())


def test_visual_positions_are_image_tokens(adapter):
    frames = frames_for(adapter, 2, (3, 3))
    batch = adapter.build_inputs([frames], ["What is here?"])
    ids = batch.inputs["input_ids"][0]
    pos = batch.visual_positions[0].flatten()
    assert (ids[pos] == adapter.image_token_id).all()
    assert len(set(pos.tolist())) == pos.numel()


def test_labels_mask_prompt_and_padding(adapter):
    frames = [frames_for(adapter, 2, (2, 3), seed=s) for s in range(2)]
    answers = ["A red box.", "Two chairs and a table near the window."]
    batch = adapter.build_inputs(frames, ["Short?", "A much longer question about the room?"], answers)
    labels, ids, mask = batch.inputs["labels"], batch.inputs["input_ids"], batch.inputs["attention_mask"]
    assert labels.shape == ids.shape
    for b, answer in enumerate(answers):
        supervised = labels[b][labels[b] != IGNORE_INDEX]
        assert adapter.tokenizer.decode(supervised) == answer + adapter.end_of_turn
        keep = labels[b] != IGNORE_INDEX
        assert torch.equal(labels[b][keep], ids[b][keep])
        assert mask[b][keep].all()
        assert not keep[batch.visual_positions[b].flatten()].any()
    assert (labels[mask == 0] == IGNORE_INDEX).all()
    loss = adapter.model(**batch.inputs).loss
    assert torch.isfinite(loss)


@pytest.mark.parametrize("side", ["left", "right"])
def test_batch_of_two_matches_single_samples(adapter, side):
    """Padding does not change the logits of real tokens (positions and masks are right)."""
    frames = [frames_for(adapter, 2, (2, 2), seed=s) for s in range(2)]
    prompts = ["Hi?", "What colour is the sofa in this room?"]
    batch = adapter.build_inputs(frames, prompts, padding_side=side)
    assert batch.inputs["attention_mask"][0].sum() < batch.inputs["attention_mask"][1].sum()
    with torch.no_grad():
        logits = adapter.model(**batch.inputs).logits
        for b in range(2):
            single = adapter.build_inputs([frames[b]], [prompts[b]])
            ref = adapter.model(**single.inputs).logits[0]
            mask = batch.inputs["attention_mask"][b].bool()
            torch.testing.assert_close(logits[b][mask], ref, atol=1e-4, rtol=1e-4)
            offset = int((~mask).sum()) if side == "left" else 0
            assert torch.equal(batch.visual_positions[b], single.visual_positions[0] + offset)


def test_generate_returns_new_text_only(adapter):
    frames = [frames_for(adapter, 2, (2, 2), seed=s) for s in range(2)]
    out = adapter.generate(frames, ["Hi?", "What is the longest wall?"], max_new_tokens=4)
    assert isinstance(out, list) and len(out) == 2 and all(isinstance(s, str) for s in out)
    single = adapter.generate([frames[1]], ["What is the longest wall?"], max_new_tokens=4)
    assert single[0] == out[1]


def test_wrong_frame_size_is_rejected(adapter):
    h, w = adapter.image_size_for_grid(pick_grid(adapter, (2, 2)))
    frames = np.zeros((2, h + 3, w, 3), np.uint8)
    with pytest.raises(BadInputError, match="resize"):
        adapter.build_inputs([frames], ["hi"])


def test_layers_and_projections(adapter):
    layers = adapter.decoder_layers()
    assert len(layers) == adapter.num_layers == len(adapter.attention_inputs())
    for i in range(adapter.num_layers):
        qk = adapter.qk_projections(i)
        assert qk.q_proj.in_features == adapter.hidden_size
        assert qk.q_proj.out_features == qk.num_heads * qk.head_dim
        assert qk.k_proj.out_features == qk.num_kv_heads * qk.head_dim
    # attention_inputs()[i] output is exactly what q_proj of layer i reads
    seen = {}
    adapter.attention_inputs()[1].register_forward_hook(lambda m, a, o: seen.setdefault("norm", o))
    adapter.qk_projections(1).q_proj.register_forward_pre_hook(lambda m, a: seen.setdefault("q_in", a[0]))
    batch = adapter.build_inputs([frames_for(adapter, 2, (2, 2))], ["hi"])
    with torch.no_grad():
        adapter.model(**batch.inputs)
    torch.testing.assert_close(seen["norm"], seen["q_in"])
    for hook_module in (adapter.attention_inputs()[1], adapter.qk_projections(1).q_proj):
        hook_module._forward_hooks.clear()
        hook_module._forward_pre_hooks.clear()


def test_lora_targets_are_llm_only(adapter):
    names = adapter.lora_target_modules()
    modules = dict(adapter.model.named_modules())
    decoder_params = {id(p) for p in adapter.decoder().parameters()}
    assert names and all(id(modules[n].weight) in decoder_params for n in names)
    assert len(names) == 7 * adapter.num_layers


def test_save_pretrained_round_trip(adapter, tmp_path):
    adapter.save_pretrained(tmp_path)
    loaded = load_adapter(tmp_path)
    assert type(loaded) is type(adapter)
    frames = frames_for(adapter, 2, (2, 2))
    a = adapter.build_inputs([frames], ["hi"])
    b = loaded.build_inputs([frames], ["hi"])
    for key in a.inputs:
        torch.testing.assert_close(a.inputs[key], b.inputs[key])
    with torch.no_grad():
        torch.testing.assert_close(adapter.model(**a.inputs).logits, loaded.model(**b.inputs).logits)


def test_qwen_inputs_have_mm_token_type_ids():
    adapter = from_preset("tiny-qwen2.5-vl")
    batch = adapter.build_inputs([frames_for(adapter, 2, (2, 2))], ["hi"], ["ok"])
    types = batch.inputs["mm_token_type_ids"]
    assert types.shape == batch.inputs["input_ids"].shape
    assert torch.equal(types == 1, batch.inputs["input_ids"] == adapter.image_token_id)


def test_qwen_cell_size_follows_patch_size():
    adapter = from_preset("tiny-qwen2.5-vl", patch_size=2)
    assert adapter.image_size_for_grid((16, 16)) == (64, 64)
    assert from_preset("tiny-qwen2.5-vl").image_size_for_grid((16, 16)) == (128, 128)


def test_registry_errors_list_names():
    with pytest.raises(ConfigError, match="qwen2.5-vl"):
        adapter_class("no-such-family")
    with pytest.raises(ConfigError, match="tiny-qwen2.5-vl"):
        from_preset("no-such-preset")
    with pytest.raises(BadInputError, match="tiny-qwen2.5-vl"):
        load_adapter("/no/such/checkpoint")


def test_peft_wraps_only_the_llm():
    peft = pytest.importorskip("peft")
    adapter = from_preset("tiny-qwen2.5-vl")
    names = adapter.lora_target_modules()
    model = peft.get_peft_model(adapter.model, peft.LoraConfig(r=2, target_modules=names))
    wrapped = [n for n, m in model.named_modules() if isinstance(m, peft.tuners.lora.LoraLayer)]
    assert len(wrapped) == len(names) == 7 * adapter.num_layers
    assert all(".language_model.layers." in n for n in wrapped)


def test_tied_orthogonal_qk_init():
    adapter = from_preset("tiny-qwen2.5-vl", qk_init="tied_orthogonal", num_kv_heads=4)
    plain = from_preset("tiny-qwen2.5-vl", num_kv_heads=4)
    for i in range(len(adapter.decoder_layers())):
        qk = adapter.qk_projections(i)
        w = qk.q_proj.weight
        assert torch.equal(w, qk.k_proj.weight)
        torch.testing.assert_close(w @ w.T, torch.eye(w.shape[0]), atol=1e-5, rtol=0)
        assert not qk.q_proj.bias.any() and not qk.k_proj.bias.any()
        assert not torch.equal(plain.qk_projections(i).q_proj.weight, plain.qk_projections(i).k_proj.weight)
    with pytest.raises(ConfigError, match="num_kv_heads"):
        from_preset("tiny-qwen2.5-vl", qk_init="tied_orthogonal")  # 2 kv heads, 4 query heads
    with pytest.raises(ConfigError, match="qk_init"):
        from_preset("tiny-qwen2.5-vl", qk_init="eye")
    sharp = from_preset("tiny-qwen2.5-vl", qk_init="tied_orthogonal", qk_gain=2.0, num_kv_heads=4)
    w = sharp.qk_projections(0).q_proj.weight
    torch.testing.assert_close(w @ w.T, 4 * torch.eye(w.shape[0]), atol=1e-4, rtol=0)  # scores x gain^2
