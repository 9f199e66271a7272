"""Model workloads (workloads/model.py) and their populations (workloads/stacked.py).

A stacked member must equal the same trial trained alone (same seed: same
initial weights and data order) within float rounding, for deterministic
layers, with every optimiser variant; dropout members draw their own masks.
Tolerance: 1e-4 absolute on losses and 1e-4 relative on weights after a few
epochs (vmap's batched kernels sum in another order than the solo ones).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hpsearch.divergence import DivergenceCheck
from hpsearch.workloads.api import TrialContext, TrialRecord
from hpsearch.workloads.loader import load_workload
from hpsearch.workloads.model import ModelWorkload, groups
from hpsearch.workloads.population import run_population
from hpsearch.workloads.spec import ModelSpec
from hpsearch.workloads.stacked import StackedAdamW, StackedSGD

MODELS = Path(__file__).parent / "workloads" / "models.py"
TOL = 1e-4


def workload(model: str = "mlp", data: str = "data", **options: object) -> ModelWorkload:
    return ModelWorkload(ModelSpec(f"{MODELS}:{model}", f"{MODELS}:{data}", **options), load_workload)  # type: ignore[arg-type]


def ctx(
    params: dict, seed: int = 0, epochs: int = 3, number: int = 0, split: str = "val", diverge: bool = False
) -> TrialContext:
    """A trial; diverge=True stops it as the coordinator does when its training loss diverges."""
    check = DivergenceCheck()
    hook = (lambda epoch, metrics, timing: check(metrics)) if diverge else None
    return TrialContext.open(TrialRecord(number, params, epochs, seed, metric="val_accuracy", split=split), "cpu", hook)


def solo(w: ModelWorkload, params: dict, seed: int, epochs: int = 3) -> TrialContext:
    c = ctx(params, seed, epochs)
    w(c)
    return c


SGD_VARIANTS = [
    {"lr": 0.1},
    {"lr": 0.05, "momentum": 0.9},
    {"lr": 0.05, "momentum": 0.9, "nesterov": True},
    {"lr": 0.1, "weight_decay": 1e-2},
    {"lr": 0.02, "momentum": 0.5, "weight_decay": 1e-3, "nesterov": True},
]


@pytest.mark.parametrize("model", ["mlp", "bn"])
def test_model_stacked_sgd_members_equal_solo_trials(model: str) -> None:
    w = workload(model, batch_size=32)
    contexts = [ctx(p, seed=10 + i, number=i) for i, p in enumerate(SGD_VARIANTS)]
    outcomes = run_population(w.population, contexts, "val_accuracy")
    for params, c, outcome in zip(SGD_VARIANTS, contexts, outcomes):
        alone = solo(workload(model, batch_size=32), params, c.seed)
        assert outcome.state == "complete"
        for key in ("train_loss", "val_loss", "val_accuracy"):
            assert c.curves[key] == pytest.approx(alone.curves[key], abs=TOL), (params, key)
        assert len(c.curves["update_ratio"]) == 3 and all(r > 0 for r in c.curves["update_ratio"])


def test_model_stacked_adamw_members_equal_solo_trials() -> None:
    variants = [{"lr": 1e-2}, {"lr": 3e-3, "weight_decay": 0.1}, {"lr": 1e-2, "beta1": 0.8, "beta2": 0.99}]
    contexts = [ctx(p, seed=3 + i, number=i) for i, p in enumerate(variants)]
    run_population(workload(optimizer="adamw").population, contexts, "val_accuracy")
    for params, c in zip(variants, contexts):
        alone = solo(workload(optimizer="adamw"), params, c.seed)
        assert c.curves["val_loss"] == pytest.approx(alone.curves["val_loss"], abs=TOL), params


def test_model_stacked_optimisers_step_like_torch() -> None:
    torch.manual_seed(0)
    w0 = torch.randn(3, 4)
    grads = [torch.randn(3, 4) for _ in range(4)]
    for stacked, make, values in [
        (
            StackedSGD,
            lambda p, v: torch.optim.SGD(
                [p], lr=v["lr"], momentum=v["momentum"], weight_decay=v["weight_decay"], nesterov=v["nesterov"]
            ),
            {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01, "nesterov": True},
        ),
        (
            StackedAdamW,
            lambda p, v: torch.optim.AdamW(
                [p], lr=v["lr"], betas=(v["beta1"], v["beta2"]), eps=v["eps"], weight_decay=v["weight_decay"]
            ),
            {"lr": 0.01, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8},
        ),
    ]:
        p = w0.clone().requires_grad_(True)
        opt = make(p, values)
        stack = {"w": torch.stack([w0, w0]).clone().requires_grad_(True)}
        vec = stacked(stack, [values, {**values, "lr": 0.0}], "cpu")
        for g in grads:
            p.grad = g.clone()
            opt.step()
            vec.step([torch.stack([g, g])])
        assert torch.allclose(stack["w"][0], p.detach(), atol=1e-6), stacked.__name__
        assert torch.equal(stack["w"][1], w0)  # the other member, lr 0, is not moved by its neighbour's values


def test_model_stacked_sgd_weight_decay_keeps_a_gradient_two_parameters_share() -> None:
    """autograd.grad returns one tensor for both parameters of `a + b`: decaying it in place for the
    first would change the second's gradient."""
    a = torch.ones(2, 3, requires_grad=True)
    b = torch.full((2, 3), 2.0, requires_grad=True)
    loss = ((a + b) * torch.arange(3.0)).sum()
    grads = torch.autograd.grad(loss, [a, b])
    assert grads[0].data_ptr() == grads[1].data_ptr()  # the case this guards against
    params = {"a": a.detach().clone(), "b": b.detach().clone()}
    values = [{"lr": 0.1, "momentum": 0.0, "weight_decay": 0.5, "nesterov": False}] * 2
    StackedSGD(params, values, "cpu").step(grads)
    g = torch.arange(3.0).expand(2, 3)
    assert torch.allclose(params["a"], 1.0 - 0.1 * (g + 0.5 * 1.0))
    assert torch.allclose(params["b"], 2.0 - 0.1 * (g + 0.5 * 2.0))


def test_model_diverged_member_is_masked_and_the_others_match_solo() -> None:
    params = [{"lr": 0.01}, {"lr": 10.0}, {"lr": 0.01, "momentum": 0.9}]
    regression = {"data": "regression", "loss": "mse"}
    contexts = [ctx(p, seed=i, number=i, epochs=4, diverge=True) for i, p in enumerate(params)]
    outcomes = run_population(workload(**regression).population, contexts, "val_loss")
    assert [o.state for o in outcomes] == ["complete", "pruned", "complete"]
    assert outcomes[1].reason == "diverged" and len(contexts[1].curves["val_loss"]) < 4
    for i in (0, 2):
        alone = solo(workload(**regression), params[i], i, epochs=4)
        assert contexts[i].curves["val_loss"] == pytest.approx(alone.curves["val_loss"], abs=TOL)


def test_model_population_groups_by_non_optimiser_params() -> None:
    trials = [
        ctx({"lr": 0.1, "width": 16}),
        ctx({"lr": 0.2, "width": 32}),
        ctx({"lr": 0.3, "width": 16, "momentum": 0.9}),
    ]
    assert groups(trials, "sgd") == [[0, 2], [1]]
    assert groups([ctx({"lr": 0.1, "beta1": 0.9}), ctx({"lr": 0.1, "beta1": 0.8})], "adamw") == [[0, 1]]
    assert groups([ctx({"lr": 0.1, "beta1": 0.9}), ctx({"lr": 0.1, "beta1": 0.8})], "sgd") == [
        [0],
        [1],
    ]  # sgd reads no beta1
    contexts = [ctx({"lr": 0.1, "width": 16}, seed=1, number=0), ctx({"lr": 0.1, "width": 32}, seed=2, number=1)]
    outcomes = run_population(workload().population, contexts, "val_accuracy")
    assert [o.state for o in outcomes] == ["complete", "complete"]
    for c, width in zip(contexts, (16, 32)):
        alone = solo(workload(), {"lr": 0.1, "width": width}, c.seed)
        assert c.curves["val_loss"] == pytest.approx(alone.curves["val_loss"], abs=TOL)


def test_model_dropout_members_draw_independent_masks_and_train_as_well() -> None:
    params = {"lr": 0.1, "momentum": 0.9}
    contexts = [ctx(params, seed=0, number=i, epochs=4) for i in range(6)]  # same seed: only dropout differs
    run_population(workload("dropout").population, contexts, "val_accuracy")
    finals = [c.curves["train_loss"][-1] for c in contexts]
    assert len({round(f, 6) for f in finals}) == len(finals)  # independent masks: no two members alike
    alone = [solo(workload("dropout"), params, 0, epochs=4).curves["val_accuracy"][-1] for _ in range(3)]
    stacked_mean = sum(c.curves["val_accuracy"][-1] for c in contexts) / len(contexts)
    assert stacked_mean >= sum(alone) / len(alone) - 0.1  # as good as solo trials on average


def test_model_fused_convnet_members_equal_solo_trials() -> None:
    """Conv2d as one grouped convolution, pooling folded over members: the fused path (no vmap)."""
    from hpsearch.workloads.fused import fused_layers
    from tests.workloads.models import bn, convnet

    assert fused_layers(convnet({})) is not None and fused_layers(bn({})) is None  # BatchNorm's buffers: vmap
    contexts = [ctx({"lr": 0.05 * (i + 1), "momentum": 0.9}, seed=i, number=i, epochs=2) for i in range(3)]
    run_population(workload("convnet", "images", batch_size=16).population, contexts, "val_accuracy")
    for i, c in enumerate(contexts):
        alone = solo(workload("convnet", "images", batch_size=16), {"lr": 0.05 * (i + 1), "momentum": 0.9}, i, epochs=2)
        assert c.curves["val_loss"] == pytest.approx(alone.curves["val_loss"], abs=TOL)


def test_model_population_durations_add_up_to_its_wall_time() -> None:
    import time

    contexts = [ctx({"lr": 0.1}, seed=i, number=i) for i in range(4)]
    start = time.perf_counter()
    outcomes = run_population(workload().population, contexts, "val_accuracy")
    elapsed = time.perf_counter() - start
    assert len({o.duration_s for o in outcomes}) == 1  # the shared time, split evenly
    assert 0 < sum(o.duration_s for o in outcomes) <= elapsed


def test_model_cnn_with_batchnorm2d_stacks() -> None:
    contexts = [ctx({"lr": 0.05 * (i + 1)}, seed=i, number=i, epochs=2) for i in range(3)]
    run_population(workload("cnn", "images", batch_size=16).population, contexts, "val_accuracy")
    for i, c in enumerate(contexts):
        alone = solo(workload("cnn", "images", batch_size=16), {"lr": 0.05 * (i + 1)}, i, epochs=2)
        assert c.curves["val_loss"] == pytest.approx(alone.curves["val_loss"], abs=TOL)


def test_model_untraceable_model_falls_back_to_one_at_a_time(capfd: pytest.CaptureFixture[str]) -> None:
    contexts = [ctx({"lr": 0.1}, seed=i, number=i, epochs=1) for i in range(2)]
    outcomes = run_population(workload("untraceable").population, contexts, "val_accuracy")
    assert [o.state for o in outcomes] == ["complete", "complete"]
    assert "cannot be stacked" in capfd.readouterr().err


def test_model_solo_reports_and_returns_metrics_and_watches() -> None:
    c = ctx({"lr": 0.1, "momentum": 0.9}, epochs=3)
    result = workload()(c)
    assert set(result) == {"train_loss", "val_loss", "val_accuracy"}
    assert len(c.curves["val_accuracy"]) == 3 and len(c.curves["update_ratio"]) == 3  # watched without the user asking
    assert c.watcher is not None and c.watcher.watches_loss


def test_model_datasets_regression_and_a_file_loss() -> None:
    c = ctx({"lr": 0.1})
    assert 0.0 <= workload(data="datasets")(c)["val_accuracy"] <= 1.0
    r = workload(data="regression", loss="mse")(ctx({"lr": 0.05}))
    assert "val_accuracy" not in r and r["val_loss"] < r["train_loss"] * 10
    f = workload(data="regression", loss=f"{MODELS}:l1")(ctx({"lr": 0.05}))
    assert f["val_loss"] > 0


def test_model_test_split_is_the_third_and_refused_without_one() -> None:
    w = workload()
    val, test = w(ctx({"lr": 0.1}, seed=1)), w(ctx({"lr": 0.1}, seed=1, split="test"))
    assert val["val_loss"] != test["val_loss"]  # evaluated on another split
    with pytest.raises(ValueError, match="no test split"):
        workload(data="data_no_test")(ctx({"lr": 0.1}, split="test"))


def test_model_bad_build_and_data_are_trial_failures_with_reasons() -> None:
    from hpsearch.workloads.function import run_trial

    outcome = run_trial(workload("not_a_module"), ctx({"lr": 0.1}), "val_accuracy")
    assert outcome.state == "fail" and "must return a torch.nn.Module" in outcome.reason
    outcome = run_trial(workload(data="mlp"), ctx({"lr": 0.1}), "val_accuracy")  # data() missing its argument
    assert outcome.state == "fail"


# ----------------------------------------------------------------------------- through the CLI


def _study(tmp_path: Path, name: str = "m", trials: int = 8) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\nmetric = "val_accuracy"\n\n'
        f'[workload]\nmodel = "{MODELS}:mlp"\ndata = "{MODELS}:data"\nbatch_size = 32\n\n'
        f"[coarse]\ntrials = {trials}\nepochs = 2\n\n"
        "[params.lr]\nlow = 1e-3\nhigh = 0.5\nlog = true\n\n[params.momentum]\nvalues = [0.5, 0.9]\n\n"
        "[params.weight_decay]\nvalues = [0, 1e-4]\n"
    )
    return path


def _trials(name: str, folder: Path) -> list:
    from hpsearch.store.storage import Store

    store = Store(name, folder)
    return store.trials(store.stage("coarse"))


def test_model_cli_population_gives_the_same_trials_as_one_by_one(tmp_path: Path, run_cli) -> None:
    from hpsearch.trials import trial_attr

    path = _study(tmp_path)
    code, _, err = run_cli("coarse", path, "--dir", tmp_path / "one", "--workers", "1")
    assert code == 0, err
    code, _, err = run_cli("coarse", path, "--dir", tmp_path / "pop", "--workers", "1", "--population", "4")
    assert code == 0, err
    one, pop = _trials("m", tmp_path / "one"), _trials("m", tmp_path / "pop")
    assert [t.params for t in one] == [t.params for t in pop]  # random strategy: same params per trial number
    for a, b in zip(one, pop):
        assert b.state.name == "COMPLETE"
        assert trial_attr(b, "curves")["val_loss"] == pytest.approx(trial_attr(a, "curves")["val_loss"], abs=TOL)
        assert len(trial_attr(b, "curves")["update_ratio"]) == 2  # a member's row is as complete as a solo trial's


@pytest.mark.parametrize("command", ["sanity", "lr-find"])
def test_model_cli_instruments_need_no_watch_call(tmp_path: Path, run_cli, command: str) -> None:
    """The shipped model study (studies/digits_model.py never calls trial.watch): both instruments run on it."""
    study = Path(__file__).resolve().parent.parent / "studies" / "digits_model.toml"
    code, out, err = run_cli(command, study, *(["--dir", tmp_path / "r"] if command == "lr-find" else []))
    assert code == 0, out + err
    if command == "sanity":
        assert out.count("PASS") == 2
    else:
        assert "suggested lr range" in out + err


def test_model_cli_range_of_a_non_optimiser_param_is_one_note(tmp_path: Path, run_cli) -> None:
    path = _study(tmp_path, trials=2)
    path.write_text(path.read_text() + '\n[params.width]\nlow = 8\nhigh = 32\ntype = "int"\n')
    code, _, err = run_cli("coarse", path, "--dir", tmp_path / "r", "--workers", "0", "--population", "2")
    assert code == 0, err
    notes = [line for line in err.splitlines() if "never share a population" in line]
    assert len(notes) == 1 and notes[0].startswith("note: width is drawn from a range")
    code, _, err = run_cli("coarse", path, "--dir", tmp_path / "r2", "--workers", "0")
    assert "never share a population" not in err  # no population asked: nothing to say
