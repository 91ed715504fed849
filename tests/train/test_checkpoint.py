"""The checkpoint's optimizer and RNG state survive the safetensors + JSON round trip exactly."""

from __future__ import annotations

import torch
from safetensors.torch import load_file, save_file

from fathom.config import TrainConfig
from fathom.train.checkpoint import (
    TrainerState,
    capture_rng_state,
    flatten_optimizer_state,
    restore_rng_state,
    unflatten_optimizer_state,
)
from fathom.train.optim import build_optimizer


def _trained(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 3))
    optimizer = build_optimizer(model, TrainConfig(learning_rate=1e-2, weight_decay=0.1))
    for _ in range(3):
        model(torch.randn(4, 6)).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    return model, optimizer


def test_optimizer_state_round_trip_through_files_resumes_identically(tmp_path):
    model, optimizer = _trained(0)
    tensors, meta = flatten_optimizer_state(optimizer.state_dict())
    save_file(tensors, str(tmp_path / "optimizer.safetensors"))
    restored_state = unflatten_optimizer_state(load_file(str(tmp_path / "optimizer.safetensors")), meta)

    twin, twin_optimizer = _trained(0)
    twin_optimizer.load_state_dict(restored_state)
    original = optimizer.state_dict()
    for pid, entry in original["state"].items():
        for key, value in entry.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(twin_optimizer.state_dict()["state"][pid][key]))
    batch = torch.randn(4, 6)
    for m, o in ((model, optimizer), (twin, twin_optimizer)):
        m(batch).square().mean().backward()
        o.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)


def test_rng_state_round_trip_and_trainer_state_json(tmp_path):
    torch.manual_seed(5)
    rng = capture_rng_state()
    first = torch.rand(3)
    restore_rng_state(rng)
    assert torch.equal(torch.rand(3), first)

    state = TrainerState(global_step=7, tokens_seen=1024, phase_name="Phase_1a_Short", phase_step=3, world_size=2)
    state.log_history.append({"step": 7, "loss": 1.5})
    (tmp_path / "trainer_state.json").write_text(state.to_json(), encoding="utf-8")
    assert TrainerState.from_file(tmp_path / "trainer_state.json") == state
    state.reset_phase_progress()
    assert (state.phase_step, state.phase_tokens_seen, state.phase_rows_consumed, state.log_history) == (0, 0, 0, [])
    assert state.global_step == 7 and state.tokens_seen == 1024  # run counters are kept
