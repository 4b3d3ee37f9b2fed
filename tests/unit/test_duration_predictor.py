"""Duration predictor: fairseq layout, rounding rule, loss, learning unit-dependent durations, expansion."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vocoder.duration import (
    DurationPredictor,
    duration_loss,
    duration_targets,
    durations_from_log,
    expand_units,
    expand_units_batch,
    frames_carried,
)

FAIRSEQ_KEYS = {
    "conv1.0.weight": (128, 128, 3),
    "conv1.0.bias": (128,),
    "ln1.weight": (128,),
    "ln1.bias": (128,),
    "conv2.0.weight": (128, 128, 3),
    "conv2.0.bias": (128,),
    "ln2.weight": (128,),
    "ln2.bias": (128,),
    "proj.weight": (1, 128),
    "proj.bias": (1,),
}


def test_state_dict_has_the_fairseq_variance_predictor_names() -> None:
    shapes = {key: tuple(value.shape) for key, value in DurationPredictor().state_dict().items()}
    assert shapes == FAIRSEQ_KEYS


def test_forward_shape_and_rounding_rule() -> None:
    model = DurationPredictor(embedding_dim=8, hidden_dim=16).eval()
    assert model(torch.randn(2, 5, 8)).shape == (2, 5)
    # exp(y) - 1 for y = log(1 + d): 0 -> clamped to 1, 0.4 -> 1, 2.6 -> 3, 7 -> 7
    log_d = torch.log1p(torch.tensor([[0.0, 0.4, 2.6, 7.0]]))
    assert durations_from_log(log_d).tolist() == [[1, 1, 3, 7]]
    assert durations_from_log(log_d).dtype == torch.long
    assert model.predict(torch.randn(1, 3, 8)).min() >= 1
    x = torch.randn(1, 50, 8)
    model.train()
    assert torch.equal(model.predict(x), model.predict(x)) and model.training  # no dropout, mode restored


def test_carried_rounding_keeps_the_predicted_length() -> None:
    values = torch.tensor([1.4, 1.4, 1.4, 0.2, 2.5, 1.5, 3.7, 1.2])
    log_d = torch.log1p(values)
    frames, carry = frames_carried(log_d)
    assert min(frames) >= 1
    # 0.2 counts as one frame (each unit keeps at least one); the rest add up to the predicted total
    assert sum(frames) == round(float(values.clamp(min=1).sum()))
    assert frames[:3] == [1, 2, 1] and abs(carry) <= 0.5 + 1e-6
    assert sum(durations_from_log(log_d[None])[0].tolist()) < sum(frames)  # per-unit rounding loses 1.4 -> 1
    # a stream passing the carry along gets the frames of one call over the whole
    first, carry_first = frames_carried(log_d[:3])
    rest, carry_rest = frames_carried(log_d[3:], carry_first)
    assert first + rest == frames and carry_rest == pytest.approx(carry)
    assert frames_carried(log_d[:0]) == ([], 0.0)


def test_loss_targets_and_mask() -> None:
    durations = torch.tensor([[1, 3, 0]])
    assert torch.allclose(duration_targets(durations), torch.log(torch.tensor([[2.0, 4.0, 1.0]])))
    pred = duration_targets(durations).clone()
    pred[0, 2] += 10.0  # a padded position with a huge error must not count
    assert duration_loss(pred, durations, torch.tensor([[True, True, False]])).item() == pytest.approx(0.0)
    assert duration_loss(pred, durations).item() == pytest.approx(100.0 / 3)


def test_learns_durations_that_depend_on_the_unit_id() -> None:
    torch.manual_seed(0)
    n_units = 16
    embedding = nn.Embedding(n_units, 32)
    model = DurationPredictor(embedding_dim=32, hidden_dim=32)
    optimizer = torch.optim.Adam([*embedding.parameters(), *model.parameters()], lr=3e-3)

    def batch(size: int) -> tuple[torch.Tensor, torch.Tensor]:
        units = torch.randint(0, n_units, (size, 20))
        return units, units % 4 + 1

    units, durations = batch(8)
    model.eval()
    before = (model.predict(embedding(units)) == durations).float().mean().item()
    model.train()
    for _ in range(300):
        units, durations = batch(16)
        loss = duration_loss(model(embedding(units)), durations)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    units, durations = batch(32)
    accuracy = (model.predict(embedding(units)) == durations).float().mean().item()
    assert before < 0.5
    assert accuracy > 0.95, accuracy


def test_expand_units_one_dimensional() -> None:
    units = torch.tensor([5, 2, 7])
    assert expand_units(units, torch.tensor([3, 1, 2])).tolist() == [5, 5, 5, 2, 7, 7]
    embeddings = torch.arange(6.0).view(3, 2)
    assert expand_units(embeddings, torch.tensor([1, 0, 2])).tolist() == [[0, 1], [4, 5], [4, 5]]
    with pytest.raises(ValueError, match="do not match"):
        expand_units(units, torch.tensor([1, 1]))
    with pytest.raises(TypeError):
        expand_units(units, torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="non-negative"):
        expand_units(units, torch.tensor([1, -1, 2]))


def test_expand_units_batched_with_lengths() -> None:
    units = torch.tensor([[5, 2, 7], [9, 4, 0]])
    durations = torch.tensor([[1, 2, 1], [2, 1, 5]])
    frames, counts = expand_units_batch(units, durations, torch.tensor([3, 2]))
    assert counts.tolist() == [4, 3]
    assert frames.tolist() == [[5, 2, 2, 7], [9, 9, 4, 0]]
    frames, counts = expand_units_batch(units, durations)
    assert counts.tolist() == [4, 8]
    assert frames[1].tolist() == [9, 9, 4, 0, 0, 0, 0, 0]
