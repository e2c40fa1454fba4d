"""Steering vectors and the steering hook: exact tensors on tiny models of every family."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import safe_open, save_file
from torch import nn

from trustdyn.blocks import SITE, block_hidden, decoder_blocks
from trustdyn.steering import (
    Steering,
    SteeringError,
    SteeringVector,
    active_steering_count,
    check_compatible,
    has_dispatchers,
    install_dispatchers,
    load_vectors,
    mean_difference_vectors,
    model_hidden_size,
    oriented,
    random_vector,
    remove_dispatchers,
    save_vectors,
    signed_alpha,
    steer,
    steer_direction,
)

INPUT_IDS = torch.tensor([[5, 17, 42, 99, 7, 120], [8, 9, 10, 11, 12, 13]])  # [2, 6]




def make_vector(target: nn.Module, layer: int = 1, seed: int = 0, scale: float = 0.7,
                **overrides: object) -> SteeringVector:
    """A random unit vector that fits ``target`` (tests only need a direction)."""
    d = model_hidden_size(target)
    raw = torch.randn(d, generator=torch.Generator().manual_seed(seed))
    fields: dict[str, object] = dict(
        direction=raw / raw.norm(), scale=scale, layer=layer, dataset="toy", toward_label=1,
        source="test/step-0", model="tiny", revision=None, hidden_size=d,
    )
    fields.update(overrides)
    return SteeringVector(**fields)  # type: ignore[arg-type]


def block_outputs(model: nn.Module, input_ids: torch.Tensor = INPUT_IDS) -> list[torch.Tensor]:
    """Run one forward pass and return every block's output hidden state [b, s, d]."""
    seen: list[torch.Tensor] = []
    handles = [
        block.register_forward_hook(lambda _m, _a, out: seen.append(block_hidden(out).clone()))
        for block in decoder_blocks(model)
    ]
    try:
        with torch.no_grad():
            model(input_ids=input_ids)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def logits(model: nn.Module, input_ids: torch.Tensor = INPUT_IDS) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=input_ids).logits


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


# --------------------------------------------------------------------------- the hook


@pytest.mark.parametrize("alpha", [2.5, -1.25])
def test_steered_block_equals_unsteered_plus_delta_at_layer_only(tiny_model, alpha):
    vec = make_vector(tiny_model, layer=1)
    clean = block_outputs(tiny_model)
    with steer(tiny_model, vec, alpha):
        steered = block_outputs(tiny_model)
    assert torch.equal(steered[0], clean[0])
    assert torch.equal(steered[1], clean[1] + vec.delta(alpha))
    assert not torch.allclose(steered[2], clean[2])
    assert vec.delta(alpha).norm().item() == pytest.approx(abs(alpha) * 0.7, rel=1e-6)


def test_nothing_changes_after_exit(tiny_model):
    before_logits = logits(tiny_model)
    before_state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    vec = make_vector(tiny_model, layer=0)
    with steer(tiny_model, vec, 3.0):
        assert has_dispatchers(tiny_model)
        assert not torch.equal(logits(tiny_model), before_logits)
    assert hook_count(tiny_model) == 0
    assert not has_dispatchers(tiny_model)
    assert torch.equal(logits(tiny_model), before_logits)
    after_state = tiny_model.state_dict()
    assert all(torch.equal(before_state[k], after_state[k]) for k in before_state)


def test_exception_inside_context_restores(tiny_llama):
    before = logits(tiny_llama)
    with pytest.raises(RuntimeError, match="boom"), steer(tiny_llama, make_vector(tiny_llama), 2):
        logits(tiny_llama)
        raise RuntimeError("boom")
    assert hook_count(tiny_llama) == 0
    assert active_steering_count() == 0
    assert torch.equal(logits(tiny_llama), before)


def test_alpha_zero_is_bit_identical(tiny_model):
    with steer(tiny_model, make_vector(tiny_model), 0.0):
        steered = logits(tiny_model)
    assert torch.equal(steered, logits(tiny_model))


def test_newest_changes_only_the_last_position(tiny_model):
    vec = make_vector(tiny_model, layer=1)
    clean, clean_logits = block_outputs(tiny_model), logits(tiny_model)
    with steer(tiny_model, vec, 4.0, positions="newest"):
        steered, steered_logits = block_outputs(tiny_model), logits(tiny_model)
    assert torch.equal(steered[1][:, :-1], clean[1][:, :-1])
    assert torch.equal(steered[1][:, -1], clean[1][:, -1] + vec.delta(4.0))
    # Causal attention: earlier positions cannot see the last one at any later layer.
    assert torch.equal(steered_logits[:, :-1], clean_logits[:, :-1])
    assert not torch.allclose(steered_logits[:, -1], clean_logits[:, -1])


def test_mask_positions_and_mask_shape_check(tiny_llama):
    vec = make_vector(tiny_llama, layer=2)
    mask = torch.zeros(INPUT_IDS.shape, dtype=torch.bool)
    mask[0, 2] = mask[1, 4] = True
    clean = block_outputs(tiny_llama)
    with steer(tiny_llama, vec, 1.5, positions=mask):
        steered = block_outputs(tiny_llama)
    expected = torch.where(mask[..., None], clean[2] + vec.delta(1.5), clean[2])
    assert torch.equal(steered[2], expected)
    with pytest.raises(SteeringError, match="mask"), steer(tiny_llama, vec, 1.5,
                                                           positions=mask[:, :3]):
        logits(tiny_llama)
    assert hook_count(tiny_llama) == 0


def test_nested_scopes_add_up(tiny_llama):
    v1, v2 = make_vector(tiny_llama, layer=1, seed=1), make_vector(tiny_llama, layer=1, seed=2)
    clean = block_outputs(tiny_llama)
    with steer(tiny_llama, v1, 1.0), steer(tiny_llama, v2, -2.0):
        assert active_steering_count() == 2
        both = block_outputs(tiny_llama)
    assert torch.equal(both[1], clean[1] + v1.delta(1.0) + v2.delta(-2.0))
    assert hook_count(tiny_llama) == 0


def test_vector_none_is_a_no_op(tiny_llama):
    with steer(tiny_llama, None, 5.0):
        assert hook_count(tiny_llama) == 0
        assert torch.equal(logits(tiny_llama), logits(tiny_llama))


def test_steering_is_invisible_to_other_threads(tiny_llama):
    clean = logits(tiny_llama)
    with steer(tiny_llama, make_vector(tiny_llama), 3.0), ThreadPoolExecutor(1) as pool:
        other = pool.submit(logits, tiny_llama).result()
        mine = logits(tiny_llama)
    assert torch.equal(other, clean)
    assert not torch.allclose(mine, clean)


def test_dispatchers_stay_while_any_scope_is_open(tiny_llama):
    vec = make_vector(tiny_llama)
    outer = Steering(tiny_llama, vec, 1.0)
    with outer.hold():
        with steer(tiny_llama, vec, 1.0):
            pass
        assert has_dispatchers(tiny_llama)  # still held by `outer`
    assert not has_dispatchers(tiny_llama)


def test_pinned_dispatchers_are_inert_and_removable(tiny_model):
    clean = logits(tiny_model)
    install_dispatchers(tiny_model)
    try:
        assert hook_count(tiny_model) == len(decoder_blocks(tiny_model))
        assert torch.equal(logits(tiny_model), clean)
        with steer(tiny_model, make_vector(tiny_model), 2.0), pytest.raises(
                SteeringError, match="still active"):
            remove_dispatchers(tiny_model)
        assert has_dispatchers(tiny_model)
    finally:
        remove_dispatchers(tiny_model)
    assert hook_count(tiny_model) == 0
    assert torch.equal(logits(tiny_model), clean)


def test_dispatcher_runs_before_hooks_registered_earlier(tiny_llama):
    """A reader hook registered before steering starts still sees the steered output."""
    vec = make_vector(tiny_llama, layer=0)
    seen: list[torch.Tensor] = []
    block = decoder_blocks(tiny_llama)[0]
    handle = block.register_forward_hook(lambda _m, _a, out: seen.append(block_hidden(out)))
    try:
        logits(tiny_llama)
        with steer(tiny_llama, vec, 1.0):
            logits(tiny_llama)
    finally:
        handle.remove()
    assert torch.equal(seen[1], seen[0] + vec.delta(1.0))


def test_active_outside_hold_is_an_error(tiny_llama):
    steering = Steering(tiny_llama, make_vector(tiny_llama), 1.0)
    with pytest.raises(SteeringError, match=r"hold\(\)"), steering.active():
        pass


def test_bad_arguments_fail_before_any_change(tiny_llama):
    vec = make_vector(tiny_llama)
    cases: list[dict[str, Any]] = [{"alpha": math.nan}, {"alpha": 1.0, "positions": "last"}]
    for kwargs in cases:
        with pytest.raises(SteeringError), steer(tiny_llama, vec, **kwargs):
            pass
    assert hook_count(tiny_llama) == 0


# --------------------------------------------------------------------------- compatibility


def test_check_compatible_names_the_mismatch(tiny_llama):
    wide = make_vector(tiny_llama).direction.repeat(18)[:576]
    foreign = make_vector(tiny_llama, direction=wide / wide.norm(), hidden_size=576,
                          model="smollm2-135m")
    with pytest.raises(SteeringError, match=r"hidden size 576 .* this model has 32; pick"):
        check_compatible(foreign, tiny_llama)
    with pytest.raises(SteeringError, match=r"layer 7 but this model has 3 decoder blocks"):
        check_compatible(make_vector(tiny_llama, layer=7), tiny_llama)
    with pytest.raises(SteeringError, match="site"):
        check_compatible(make_vector(tiny_llama, site="attn_out"), tiny_llama)
    with pytest.raises(SteeringError, match="hidden size 576"), steer(tiny_llama, foreign, 1.0):
        pass
    assert hook_count(tiny_llama) == 0


def test_vector_validates_its_fields(tiny_llama):
    with pytest.raises(SteeringError, match="unit norm"):
        make_vector(tiny_llama, direction=torch.ones(32))
    with pytest.raises(SteeringError, match="shape"):
        make_vector(tiny_llama, direction=torch.ones(8) / math.sqrt(8))
    with pytest.raises(SteeringError, match="toward_label"):
        make_vector(tiny_llama, toward_label=2)
    vec = make_vector(tiny_llama, direction=make_vector(tiny_llama).direction.double())
    assert vec.direction.dtype == torch.float32


# --------------------------------------------------------------------------- derivation


def planted_blocks(n_layers: int = 4, n: int = 200, d: int = 16, seed: int = 0
                   ) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    """Gaussian activations whose class means differ along a known unit direction."""
    rng = np.random.default_rng(seed)
    labels = np.tile([0, 1], n // 2)
    planted = rng.normal(size=d)
    planted /= np.linalg.norm(planted)
    acts = rng.normal(size=(n_layers, n, d)) * 0.3
    acts += (labels[None, :, None] - 0.5) * 4.0 * planted[None, None, :]
    acts += rng.normal(size=(n_layers, 1, d))  # a per-layer offset the difference cancels
    return torch.tensor(acts, dtype=torch.float32), labels, torch.tensor(planted)


def test_mean_difference_recovers_planted_direction_and_scale():
    blocks, labels, planted = planted_blocks()
    vectors = mean_difference_vectors(blocks, labels, dataset="toy", source="s/step-1",
                                      model="m", meta={"seed": 3})
    assert [v.layer for v in vectors] == [0, 1, 2, 3]
    for ell, vec in enumerate(vectors):
        assert float(vec.direction.double() @ planted.double()) > 0.99
        assert vec.toward_label == 1 and vec.hidden_size == 16 and vec.site == SITE
        assert vec.meta["seed"] == 3 and vec.meta["n"] == 200 and vec.meta["n_label1"] == 100
        # Naive per-layer reference: class means, normalise, std (ddof 1) of projections.
        acts = blocks[ell].double().numpy()
        diff = acts[labels == 1].mean(0) - acts[labels == 0].mean(0)
        direction = diff / np.linalg.norm(diff)
        np.testing.assert_allclose(vec.direction.numpy(), direction, atol=1e-5)
        assert vec.scale == pytest.approx(float(np.std(acts @ direction, ddof=1)), rel=1e-5)


def test_mean_difference_scale_from_other_rows():
    blocks, labels, _ = planted_blocks()
    fit = mean_difference_vectors(blocks[:, :100], labels[:100], dataset="toy", source="s",
                                  model="m", scale_blocks=blocks)
    proj = torch.einsum("nd,d->n", blocks[2].double(), fit[2].direction.double())
    assert fit[2].scale == pytest.approx(float(proj.std()), rel=1e-5)
    assert fit[2].meta["n"] == 100 and fit[2].meta["n_scale"] == 200


@pytest.mark.parametrize(
    ("blocks", "labels", "message"),
    [
        (torch.zeros(4, 6), np.array([0, 1] * 3), "n_layers, n, hidden"),
        (torch.zeros(2, 6, 3), np.array([0, 1] * 2), "6 activation rows but 4 labels"),
        (torch.zeros(2, 6, 3), np.array([0, 1, 2] * 2), "0 or 1"),
        (torch.zeros(2, 6, 3), np.zeros(6), "both labels"),
        (torch.zeros(2, 6, 3), np.array([0, 1] * 3), "coincide"),
    ],
)
def test_mean_difference_rejects_bad_input(blocks, labels, message):
    with pytest.raises(SteeringError, match=message):
        mean_difference_vectors(blocks, labels, dataset="t", source="s", model="m")


def test_random_vector_is_a_seeded_unit_control(tiny_llama):
    base = make_vector(tiny_llama, layer=2, scale=1.3)
    rng_state = torch.get_rng_state()
    a, b, c = (random_vector(base, seed=s) for s in (1, 1, 2))
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert torch.equal(a.direction, b.direction) and not torch.equal(a.direction, c.direction)
    assert a.direction.norm().item() == pytest.approx(1.0, abs=1e-6)
    assert (a.source, a.layer, a.scale, a.meta["seed"]) == ("random", 2, 1.3, 1)
    assert a.meta["control_for"] == base.source


# --------------------------------------------------------------------------- signs


def test_sign_helpers_express_intent(tiny_llama):
    vec = make_vector(tiny_llama)
    assert signed_alpha(2.0, vec, toward_label=1) == 2.0
    assert signed_alpha(2.0, vec, toward_label=0) == -2.0
    assert steer_direction(vec, -2.0) == "toward label 0"
    assert steer_direction(vec, 2.0) == "toward label 1"
    assert steer_direction(vec, 0.0) == steer_direction(None, 1.0) == "none"
    with pytest.raises(SteeringError, match="negative"):
        signed_alpha(-1.0, vec, toward_label=0)
    away = oriented(vec, toward_label=0)
    assert away.toward_label == 0 and away.meta["flipped"] is True
    assert oriented(vec, toward_label=1) is vec
    assert torch.equal(away.delta(signed_alpha(2.0, away, 0)), vec.delta(signed_alpha(2.0, vec, 0)))
    assert steer_direction(away, 2.0) == "toward label 0"
    assert oriented(away, toward_label=1).meta["flipped"] is False


# --------------------------------------------------------------------------- files


def assert_same_vectors(got: Sequence[SteeringVector], want: Sequence[SteeringVector]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g.direction, w.direction)
        for f in dataclasses.fields(SteeringVector):
            if f.name != "direction":
                assert getattr(g, f.name) == getattr(w, f.name), f.name


def test_save_load_roundtrip(tmp_path: Path):
    blocks, labels, _ = planted_blocks(n_layers=2)
    vectors = mean_difference_vectors(blocks, labels, dataset="toxigen", source="amber/ckpt_179",
                                      model="LLM360/Amber", revision="ckpt_179",
                                      meta={"seed": np.int64(7)})
    vectors.append(random_vector(vectors[0], seed=4))
    vectors.append(dataclasses.replace(vectors[1], revision=None))
    path = save_vectors(tmp_path / "sub" / "v.safetensors", vectors)
    loaded = load_vectors(path)
    assert loaded[0].meta["seed"] == 7
    # numpy scalars in meta come back as plain numbers
    expected = [dataclasses.replace(v, meta={**v.meta, "seed": int(v.meta["seed"])})
                for v in vectors]
    assert_same_vectors(loaded, expected)
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata()
    assert header["0.model"] == "LLM360/Amber" and header["1.layer"] == "1"
    assert header["0.site"] == SITE and header["0.operation"] == "add"
    assert float(header["0.scale"]) == vectors[0].scale and "3.revision" not in header


def test_load_errors_are_clear(tmp_path: Path):
    with pytest.raises(SteeringError, match="No steering-vector file"):
        load_vectors(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(SteeringError, match="not a readable safetensors"):
        load_vectors(garbage)
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, str(other))
    with pytest.raises(SteeringError, match="not a trustdyn steering-vector file"):
        load_vectors(other)
    with pytest.raises(SteeringError, match="No steering vectors"):
        save_vectors(tmp_path / "empty.safetensors", [])


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(4, 40), shift=st.floats(-5.0, 5.0))
def test_vectors_ignore_row_order_and_a_common_shift(seed: int, n: int, shift: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    blocks = torch.randn(2, n, 5, generator=gen, dtype=torch.float64)
    labels = np.array([i % 2 for i in range(n)])
    perm = torch.randperm(n, generator=gen)

    def fit(b: torch.Tensor, y: np.ndarray) -> list[SteeringVector]:
        return mean_difference_vectors(b, y, dataset="t", source="s", model="m")

    base, permuted, shifted = fit(blocks, labels), fit(blocks[:, perm], labels[perm.numpy()]), \
        fit(blocks + shift, labels)
    for a, b, c in zip(base, permuted, shifted, strict=True):
        torch.testing.assert_close(b.direction, a.direction, atol=1e-5, rtol=0)
        torch.testing.assert_close(c.direction, a.direction, atol=1e-4, rtol=0)
        assert b.scale == pytest.approx(a.scale, rel=1e-5)
        assert c.scale == pytest.approx(a.scale, rel=1e-4)
