"""The short-budget recipe: warmup + cosine and EMA follow their formulas, recipes merge under the
user's settings, the starting weights are validated, and the EMA is what gets saved."""

import math

import pytest
import torch
from torch import nn

from synthdet.training.config import RECIPES, TrainConfig, train_config
from synthdet.training.optim import ModelEMA, lr_factor, make_optimizer, make_scheduler


def test_warmup_then_cosine_formula():
    cfg = TrainConfig(iterations=110, warmup_iters=10, warmup_start=0.1, schedule="cosine", min_lr_ratio=0.05)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(5, cfg) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(10, cfg) == pytest.approx(1.0)
    for step in (10, 35, 60, 85, 110):
        t = (step - 10) / 100
        assert lr_factor(step, cfg) == pytest.approx(0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))
    assert lr_factor(110, cfg) == pytest.approx(0.05)
    assert lr_factor(50, TrainConfig(iterations=100)) == 1.0  # paper: constant


def test_scheduler_applies_the_factor_after_each_step():
    cfg = TrainConfig(iterations=20, lr=1e-2, warmup_iters=4, schedule="cosine", optimizer="adamw")
    p = nn.Parameter(torch.zeros(3, 3))
    opt = make_optimizer(nn.ParameterList([p]), cfg)
    sched = make_scheduler(opt, cfg)
    for step in range(20):
        assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 * lr_factor(step, cfg))
        opt.step()
        sched.step()


def test_adamw_decays_only_weights_of_rank_two_or_more():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4))
    opt = make_optimizer(model, TrainConfig(optimizer="adamw", weight_decay=0.05))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model[0].weight)}


def test_ema_formula_and_integer_buffers():
    model = nn.BatchNorm1d(2)
    ema = ModelEMA(model, decay=0.9)
    expected = model.weight.detach().clone()
    for t in range(1, 30):
        with torch.no_grad():
            model.weight.add_(1.0)
            model.num_batches_tracked += 1
        ema.update(model)
        d = min(0.9, (1 + t) / (10 + t))
        expected = d * expected + (1 - d) * model.weight.detach()
        torch.testing.assert_close(ema.module.weight, expected)
    assert ema.module.num_batches_tracked.item() == 29
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_recipes_merge_under_user_settings():
    cfg = train_config({"recipe": "short", "lr": 5e-4}, iterations=7)
    assert cfg.recipe == "short" and cfg.lr == 5e-4 and cfg.iterations == 7
    assert cfg.ema_decay == RECIPES["short"]["ema_decay"] and cfg.augment and cfg.val_at_start
    paper = train_config({})
    assert paper.recipe == "paper" and paper.optimizer == "adam" and paper.lr == 1e-4 and not paper.augment
    with pytest.raises(ValueError, match="unknown recipe"):
        train_config({"recipe": "fast"})


def test_short_recipe_validates_start_and_keeps_the_ema(tmp_path):
    """Finetuning can never end below its starting weights, and the saved model is the EMA."""
    from synthdet.training import finetune
    from synthdet.training.checkpoint import load_checkpoint

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2))
    model.forward = _LossModel(model)  # type: ignore[method-assign]
    calls = []

    def val_fn(m):  # the starting weights score best
        calls.append(m)
        return 1.0 if len(calls) == 1 else 0.5

    ds = [(torch.zeros(2), {}) for _ in range(4)]
    cfg = train_config({"recipe": "short"}, iterations=6, batch_size=2, val_every=3, progress=False, augment=False)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    res = finetune(model, ds, None, cfg, tmp_path, val_fn=val_fn)
    assert res.best_step == 0 and [c["step"] for c in res.curve] == [0, 3, 6]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in start.items())
    last = load_checkpoint(tmp_path / "last.pt")
    assert set(last) >= {"model", "train_model", "ema_updates"} and last["ema_updates"] == 6
    assert not torch.equal(last["model"]["0.weight"], last["train_model"]["0.weight"])


class _LossModel:
    """``model(images, targets)`` -> a loss dict, for a plain ``nn.Linear`` under the trainer."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net

    def __call__(self, images, targets=None):
        x = torch.stack([im for im in images]).reshape(len(images), -1)
        return {"loss": (self.net[0](x) - 1).pow(2).mean()}


def test_min_epochs_scales_finetuning_budget_with_real_images():
    cfg = TrainConfig(iterations=125, batch_size=16, min_epochs=12)
    assert cfg.for_dataset(10).iterations == 125  # 12 passes = 8 iterations: the floor wins
    assert cfg.for_dataset(300).iterations == 225  # 12 * 300 / 16 = 225 exactly
    assert cfg.for_dataset(301).iterations == 226  # rounded up, never short of 12 passes
    assert TrainConfig(iterations=125).for_dataset(10_000).iterations == 125  # 0 = fixed budget
    with pytest.raises(ValueError, match="min_epochs"):
        TrainConfig(min_epochs=-1)
