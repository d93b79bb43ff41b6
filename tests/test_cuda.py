"""The cuda path: every strategy, and the daemon itself, train on a GPU and hand back CPU models.

CI has no GPU, so these are skipped there; on a machine with one:
``python -m pytest tests/test_cuda.py``. Where there is none, asking for ``cuda`` is a config
error (tests/test_cli.py).
"""

import copy
import json

import pytest
import torch

from conftest import retain, save_npz, write_config
from retain.strategies.adapt import train_candidate
from retain.strategies.forgetting import evaluate_gate
from retain.strategies.job import TrainingJob
from retain.strategies.models import mlp, predict
from retain.strategies.kinds import STRATEGIES
from retain.strategies.policy import Choice
from retain.strategies.replay import ReplayMemory, remember, split_holdout
from retain.strategies.training import TrainingSettings, train_initial

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CPU = TrainingSettings(epochs=3, batch_size=32, lr=0.003, device="cpu", seed=0)
GPU = TrainingSettings(epochs=3, batch_size=32, lr=0.003, device="cuda", seed=0)


def on_cpu(model: torch.nn.Module) -> bool:
    return all(t.device.type == "cpu" for t in [*model.parameters(), *model.buffers()])


@pytest.fixture(scope="module")
def production_and_stream(digit_data):
    x, y = (torch.as_tensor(a) for a in digit_data)
    old = y < 8  # the batch brings classes 8 and 9, so every strategy widens the head
    x0, y0 = x[old][:600], y[old][:600]
    train, holdout = split_holdout(x0, y0, 0.25, seed=0)
    production = train_initial(mlp((64,), 8, hidden=(64,)), *train, CPU)
    memory = remember(ReplayMemory.empty((64,)), train, holdout, 0, capacity=300, audit_fraction=0.3, seed=0)
    batch_x, batch_y = x[600:1000], y[600:1000]
    test = (x[1000:], y[1000:])
    return production, memory, (batch_x, batch_y), test


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_strategy_trains_on_the_gpu_and_returns_a_cpu_model_as_good_as_the_cpus(strategy, production_and_stream):
    production, memory, batch, (test_x, test_y) = production_and_stream
    before = copy.deepcopy(production.state_dict())
    choice = Choice(strategy, {"lr": 0.003}, "", strategy)
    candidates = {}
    for settings in (CPU, GPU):
        torch.cuda.reset_peak_memory_stats()
        resident = torch.cuda.memory_allocated()
        job = TrainingJob.from_memory(production, batch, memory, settings)
        candidates[settings.device] = train_candidate(choice, job).model
        assert (torch.cuda.max_memory_allocated() > resident) == (settings.device == "cuda")
    gpu = candidates["cuda"]
    assert on_cpu(gpu) and not gpu.training
    assert all(torch.equal(before[k], v) for k, v in production.state_dict().items())
    if strategy == "feature_extraction":
        for name, tensor in production.backbone.state_dict().items():
            assert torch.equal(tensor, gpu.backbone.state_dict()[name]), name
    accuracy = {device: float((predict(m, test_x) == test_y).double().mean()) for device, m in candidates.items()}
    # Same seed, same data: only floating-point order differs between the two devices.
    assert abs(accuracy["cuda"] - accuracy["cpu"]) < 0.03, accuracy
    gate = evaluate_gate(production, gpu, memory.audit_groups(), (test_x, test_y))
    assert gate.acc_new_candidate > gate.acc_new_production


def test_the_daemon_adapts_a_batch_on_the_gpu_and_serves_it_on_the_cpu(tmp_path, digit_data):
    x, y = digit_data
    config = write_config(tmp_path, training={"device": "cuda"}, gate={"max_forgetting": 1.0, "min_gain": -1.0})
    save_npz(tmp_path / "init.npz", x[:500], y[:500])
    retain(config, "init", "--data", str(tmp_path / "init.npz"), "--train")
    save_npz(tmp_path / "inbox" / "b.npz", x[500:800], y[500:800])
    result = retain(config, "--log-format", "json", "run", "--once")
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    [ready] = [e for e in events if e["event"] == "daemon ready"]
    assert ready["device"] == "cuda"
    [gated] = [e for e in events if e["event"] == "candidate gated"]
    assert gated["decision"] == "accepted"
    versions = json.loads(retain(config, "versions", "--json").stdout)
    assert versions[-1]["version"] == 2 and versions[-1]["is_production"]
    save_npz(tmp_path / "unseen.npz", x[800:1000], y[800:1000])
    predicted = json.loads(retain(config, "predict", str(tmp_path / "unseen.npz"), "--json").stdout)["predictions"]
    assert sum(int(p == t) for p, t in zip(predicted, y[800:1000], strict=True)) > 150


def test_training_on_the_gpu_leaves_the_global_generators_as_they_were(production_and_stream):
    production, memory, batch, _ = production_and_stream
    torch.manual_seed(12345)  # a state that no training seed reproduces
    torch.rand(3), torch.rand(3, device="cuda")
    cpu_state, gpu_state = torch.get_rng_state(), torch.cuda.get_rng_state()
    train_candidate(Choice("meta", {"lr": 0.003}, "", "meta"), TrainingJob.from_memory(production, batch, memory, GPU))
    assert torch.equal(torch.get_rng_state(), cpu_state)
    assert torch.equal(torch.cuda.get_rng_state(), gpu_state)
