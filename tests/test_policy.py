"""Strategy selection is a pure function of the shift report and config."""

from strategies.policy import PolicyConfig, ShiftHistoryEntry, choose
from strategies.shift import ShiftReport


def report(severity: str, reasons=("accuracy drop 0.120 >= 0.1",)) -> ShiftReport:
    return ShiftReport(
        mmd2=0.05, p_value=0.004, label_distance=0.1, novel_classes=(), accuracy_reference=0.9,
        accuracy_batch=0.78, n_reference=300, n_batch=200, severity=severity, reasons=tuple(reasons),
    )


def test_finetune_learning_rate_is_reduced_and_grows_with_severity():
    config = PolicyConfig()
    rates = [choose(report(s), (), config, base_lr=0.01).hyperparameters["lr"] for s in ("none", "mild", "moderate")]
    assert rates == sorted(rates)
    assert all(rate < 0.01 for rate in rates)


def test_learning_rate_scale_comes_from_config():
    choice = choose(report("moderate"), (), PolicyConfig(lr_scale_moderate=0.25), base_lr=0.004)
    assert choice.strategy == "finetune"
    assert choice.hyperparameters["lr"] == 0.001


def test_rationale_names_the_measurements_and_the_rule():
    history = (ShiftHistoryEntry(batch_id=1, severity="mild", p_value=0.01),)
    choice = choose(report("moderate"), history, PolicyConfig(), base_lr=0.01)
    assert "accuracy drop 0.120" in choice.rationale
    assert choice.rule in choice.rationale
    assert choice.measurements["earlier_batches"] == 1
    assert choice.measurements["p_value"] == 0.004
