"""Training loop: resume, best checkpoint, non-finite guard, data order, mixed batches, DDP."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from synthdet.models import build_detector
from synthdet.training import (
    EndlessSampler,
    NonFiniteLossError,
    TrainConfig,
    batch_iterator,
    finetune,
    load_checkpoint,
    mixed,
    mixed_batch_iterator,
    pretrain,
)

SIZE = 64



class ToyDataset(torch.utils.data.Dataset):
    """n tiny images; image i has one box whose corner encodes i (so batches can be identified)."""

    def __init__(self, n: int = 6, empty_every: int = 0) -> None:
        self.n, self.empty_every = n, empty_every

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(i)
        img = torch.rand(3, SIZE, SIZE, generator=g)
        if self.empty_every and i % self.empty_every == 0:
            return img, {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "id": i}
        x = float(2 + i % 20)
        return img, {"boxes": torch.tensor([[x, 4.0, x + 30, 40.0]]), "labels": torch.tensor([1]), "id": i}


@dataclass
class _Sample:
    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray


class ToyStream(torch.utils.data.IterableDataset):
    """Stand-in for SynthStream: sample i is a pure function of (seed, i); has start/block/render."""

    def __init__(self, seed: int = 0, start: int = 0, block: int = 1) -> None:
        self.seed, self.start, self.block = seed, start, block

    def render(self, i: int) -> _Sample:
        rng = np.random.default_rng([self.seed, i])
        img = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
        x = float(i % 30)
        return _Sample(img, np.array([[x, 2.0, x + 20, 30.0]], np.float32), np.array([1]))

    def __iter__(self):
        i = self.start
        while True:
            s = self.render(i)
            yield (torch.from_numpy(s.image).permute(2, 0, 1).float() / 255,
                   {"boxes": torch.from_numpy(s.boxes), "labels": torch.from_numpy(s.labels)})
            i += 1


def _cfg(**kw) -> TrainConfig:
    base = dict(iterations=4, batch_size=2, val_every=2, checkpoint_every=2, device="cpu", progress=False,
                image_size=SIZE, log_every=1, eval_batch_size=2)
    base.update(kw)
    return TrainConfig(**base)


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return build_detector("ssd_mobilenet", 1, SIZE, weights="none")


def _ids(batch):
    return [int(t["id"]) for t in batch[1]]


def test_endless_sampler_resumes_and_shards():
    s = EndlessSampler(5, seed=3, start_step=0, per_rank=2)
    it = iter(s)
    full = [next(it) for _ in range(20)]
    assert sorted(full[:5]) == list(range(5)) and sorted(full[5:10]) == list(range(5))  # epochs are permutations
    it2 = iter(EndlessSampler(5, seed=3, start_step=3, per_rank=2))
    assert [next(it2) for _ in range(6)] == full[6:12]  # resume at step 3 = position 6
    r0, r1 = iter(EndlessSampler(5, 3, 0, 1, rank=0, world=2)), iter(EndlessSampler(5, 3, 0, 1, rank=1, world=2))
    interleaved = [v for _ in range(6) for v in (next(r0), next(r1))]
    assert interleaved == full[:12]  # the two ranks together see the single-process order
    assert full != [next(iter(EndlessSampler(5, 4, 0, 2))) for _ in range(20)]


def test_batch_iterator_stream_start_and_rank_shards():
    stream = ToyStream()
    whole = batch_iterator(stream, 4, start_step=0, seed=0)
    b0, b1 = next(whole), next(whole)
    resumed = next(batch_iterator(stream, 4, start_step=1, seed=0))
    assert all(torch.equal(a, b) for a, b in zip(b1[0], resumed[0]))
    from synthdet.training.engine import DistInfo

    halves = [next(batch_iterator(stream, 4, 1, 0, dist_info=DistInfo(r, 2))) for r in (0, 1)]
    merged = halves[0][0] + halves[1][0]
    assert all(torch.equal(a, b) for a, b in zip(merged, b1[0]))
    assert not torch.equal(b0[0][0], b1[0][0])


def test_mixed_batches_have_the_requested_real_fraction():
    it = mixed_batch_iterator(ToyDataset(5), ToyStream(), batch_size=4, real_fraction=0.25, start_step=0, seed=0)
    images, targets = next(it)
    assert len(images) == 4
    assert sum("id" in t for t in targets) == 1
    with pytest.raises(ValueError):
        next(mixed_batch_iterator(ToyDataset(5), ToyStream(), 4, 1.5, 0, 0))


def test_resume_gives_identical_weights(tmp_path):
    ds = ToyDataset(5, empty_every=3)  # includes images with no objects
    full = _model()
    r_full = pretrain(full, ds, _cfg(), tmp_path / "full")
    part = _model()
    pretrain(part, ds, _cfg(iterations=2), tmp_path / "part")
    assert load_checkpoint(tmp_path / "part" / "last.pt")["step"] == 2
    resumed = _model(seed=123)  # different init: everything must come from the checkpoint
    r_res = pretrain(resumed, ds, _cfg(iterations=4), tmp_path / "part", resume=True)
    assert r_full.steps == r_res.steps == 4
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert r_full.checkpoint.name == "last.pt" and (tmp_path / "full" / "config.yaml").is_file()
    ck = load_checkpoint(r_full.checkpoint)
    assert {"model", "optimizer", "step", "rng", "config"} <= set(ck) and ck["config"]["train"]["iterations"] == 4


def test_killed_run_resumes_with_identical_loss_log(tmp_path):
    """A run killed mid logging window (checkpoint at step 2, log every 3) logs the same losses."""
    ds = ToyDataset(5)
    cfg = _cfg(iterations=4, log_every=3, checkpoint_every=2, val_every=3)
    full = finetune(_model(), ds, None, cfg, tmp_path / "full", val_fn=lambda m: 0.5)

    def killed(model):
        raise KeyboardInterrupt  # the process dies at the step-3 validation, after step 2's checkpoint

    with pytest.raises(KeyboardInterrupt):
        finetune(_model(), ds, None, cfg, tmp_path / "run", val_fn=killed)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 2
    resumed = finetune(_model(seed=123), ds, None, cfg, tmp_path / "run", val_fn=lambda m: 0.5)
    assert [x["step"] for x in full.losses] == [3, 4]
    assert resumed.losses == full.losses


def test_finetune_keeps_best_checkpoint(tmp_path):
    seq = iter([0.2, 0.7, 0.4])
    snapshots = {}

    def val_fn(model):
        ap = next(seq)
        snapshots[ap] = {k: v.clone() for k, v in model.state_dict().items()}
        return ap

    model = _model()
    res = finetune(model, ToyDataset(4), None, _cfg(iterations=6), tmp_path, val_fn=val_fn)
    assert res.best_ap == 0.7 and res.best_step == 4
    assert [c["step"] for c in res.curve] == [2, 4, 6] and [c["ap50"] for c in res.curve] == [0.2, 0.7, 0.4]
    assert res.checkpoint == tmp_path / "best.pt"
    for k, v in model.state_dict().items():  # the model now holds the step-4 weights
        assert torch.equal(v, snapshots[0.7][k]), k
    assert (tmp_path / "curve.csv").read_text().splitlines()[0] == "step,ap50,loss,seconds"
    assert (tmp_path / "curve.png").stat().st_size > 1000


def test_finetune_with_real_validation_and_mixed(tmp_path):
    res = finetune(_model(), ToyDataset(4), ToyDataset(2), _cfg(iterations=2), tmp_path / "ft")
    assert res.best_ap is not None and 0.0 <= res.best_ap <= 1.0 and len(res.curve) == 1
    res2 = mixed(_model(), ToyDataset(4), ToyStream(), _cfg(iterations=2), tmp_path / "mx", real_fraction=0.5)
    assert res2.steps == 2 and res2.best_ap is None and res2.checkpoint.name == "last.pt"
    assert load_checkpoint(res2.checkpoint)["config"]["real_per_batch"] == 1


class _NaNModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, images, targets=None):
        return {"classification": self.w * float("nan"), "bbox_regression": self.w * 0}


def test_non_finite_loss_stops_with_clear_message(tmp_path):
    with pytest.raises(NonFiniteLossError, match="non-finite training loss at step 1"):
        pretrain(_NaNModel(), ToyDataset(3), _cfg(), tmp_path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist

    model = _model()
    try:
        pretrain(model, ToyDataset(4), _cfg(iterations=2, batch_size=4, checkpoint_every=0), Path(out))
        torch.save(model.state_dict(), Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_gloo(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    params = [k for k in a if "running_" not in k and "num_batches" not in k]
    assert all(torch.equal(a[k], b[k]) for k in params)  # gradients all-reduced: parameters in sync
    # (BN running stats are per rank until DDP re-broadcasts rank 0's at the next forward)
    ck = load_checkpoint(tmp_path / "last.pt")
    assert ck["step"] == 2 and ck["config"]["world_size"] == 2
    init = _model().state_dict()
    assert any(not torch.equal(init[k], a[k]) for k in a)  # it did train


def _coco(tmp_path: Path, name: str, n: int) -> Path:
    from synthdet.datasets.coco import write_coco
    from synthdet.datasets.records import DetectionRecord
    from synthdet.utils.image import write_image

    rng = np.random.default_rng(len(name) + n)
    recs = []
    for i in range(n):
        img = rng.integers(0, 255, (48, 56, 3), dtype=np.uint8)
        p = tmp_path / name / f"{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        write_image(p, img)
        recs.append(DetectionRecord(str(p), 56, 48, np.array([[4, 5, 30, 40]], np.float32), np.array([1]), i + 1))
    path = tmp_path / name / "annotations.json"
    write_coco(path, recs, {1: "bird"}, image_root=tmp_path / name)
    return path


def test_cli_finetune_then_eval(tmp_path, capsys):
    from synthdet.cli import main

    train, val = _coco(tmp_path, "train", 4), _coco(tmp_path, "val", 2)
    out = tmp_path / "run"
    rc = main(["finetune", "--train", str(train), "--val", str(val), "--out", str(out), "--weights", "none",
               "--iterations", "2", "--batch-size", "2", "--image-size", "64", "--device", "cpu", "--n-real", "3",
               "--set", "val_every=1", "--no-progress"])
    assert rc == 0
    import json

    res = json.loads((out / "result.json").read_text())
    # the default "short" recipe also validates the starting weights (step 0)
    assert res["steps"] == 2 and [c["step"] for c in res["curve"]] == [0, 1, 2]
    assert res["checkpoint"].endswith("best.pt")
    rc = main(["eval", "--data", str(val), "--checkpoint", str(out / "best.pt"), "--out", str(tmp_path / "ev"),
               "--device", "cpu", "--no-progress"])
    assert rc == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["num_images"] == 2 and set(metrics["per_class"]) == {"bird"}
    assert (tmp_path / "ev" / "pr.png").is_file()
    assert "AP50" in capsys.readouterr().out


def test_cli_pretrain_on_real_synth_stream_and_resume_order(tmp_path):
    """pretrain on the project's SynthStream (naive pasting, tiny canvas); batches resume by index."""
    from synthdet.cli import main
    from synthdet.synthesis import SynthConfig, make_stream
    from synthdet.utils.image import write_image

    rng = np.random.default_rng(0)
    for i in range(3):
        write_image(tmp_path / "objects" / f"o{i}.png", rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
        write_image(tmp_path / "bg" / f"b{i}.jpg", rng.integers(0, 255, (90, 120, 3), dtype=np.uint8))
    (tmp_path / "synth.yaml").write_text("canvas_size: 64\nobject_size: 32\nnum_objects: [1, 2]\n")
    stream = make_stream(tmp_path / "objects", tmp_path / "bg", segmenter="none",
                         config=SynthConfig(canvas_size=64, object_size=32, num_objects=(1, 2)), progress=False)
    b1 = next(batch_iterator(stream, 2, start_step=1, seed=0))
    assert all(torch.equal(im, stream.sample(2 + j)[0]) for j, im in enumerate(b1[0]))
    rc = main(["pretrain", "--objects", str(tmp_path / "objects"), "--backgrounds", str(tmp_path / "bg"),
               "--segmenter", "none", "--synth-config", str(tmp_path / "synth.yaml"), "--out", str(tmp_path / "pt"),
               "--weights", "none", "--iterations", "2", "--batch-size", "2", "--image-size", "64",
               "--device", "cpu", "--no-progress"])
    assert rc == 0
    ck = load_checkpoint(tmp_path / "pt" / "last.pt")
    assert ck["step"] == 2 and ck["config"]["detector"]["num_classes"] == 1
