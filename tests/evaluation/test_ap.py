"""AP@0.5: hand-computed cases and a cross-check against pycocotools."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from synthdet.evaluation import average_precision, box_iou, evaluate_detector, plot_pr_curves, voc_ap

E = np.zeros((0, 4))



def _ap(preds, gts, **kw):
    """preds: per image list of (box, score, label); gts: per image list of (box, label)."""
    pb = [np.array([p[0] for p in ps], float).reshape(-1, 4) for ps in preds]
    ps_ = [np.array([p[1] for p in ps], float) for ps in preds]
    pl = [np.array([p[2] for p in ps], int) for ps in preds]
    gb = [np.array([g[0] for g in gs], float).reshape(-1, 4) for gs in gts]
    gl = [np.array([g[1] for g in gs], int) for gs in gts]
    return average_precision(pb, ps_, pl, gb, gl, **kw)


def test_box_iou_exclusive_end_convention():
    # one pixel at (5, 7) is (5, 7, 6, 8): area 1; IoU with a 2x1 box covering it is 0.5
    iou = box_iou(np.array([[5, 7, 6, 8]]), np.array([[5, 7, 7, 8], [6, 7, 7, 8]]))
    np.testing.assert_allclose(iou, [[0.5, 0.0]])


def test_perfect_and_no_predictions():
    gts = [[((0, 0, 10, 10), 1)], [((5, 5, 20, 20), 1)]]
    perfect = _ap([[((0, 0, 10, 10), 0.9, 1)], [((5, 5, 20, 20), 0.8, 1)]], gts)
    assert perfect["per_class"][1] == pytest.approx(1.0)
    none = _ap([[], []], gts)
    assert none["per_class"][1] == 0.0 and none["mean"] == 0.0


def test_hand_computed_curve():
    # 3 GT; ranked dets: TP, FP, TP, FP -> P/R points (1, 1/3), (2/3, 2/3)
    # all-point AP = 1/3 * 1 + 1/3 * 2/3 = 5/9
    gts = [[((0, 0, 10, 10), 1), ((20, 20, 30, 30), 1), ((40, 40, 50, 50), 1)]]
    preds = [[((0, 0, 10, 10), 0.9, 1), ((60, 60, 70, 70), 0.8, 1), ((20, 20, 30, 30), 0.7, 1),
              ((80, 80, 90, 90), 0.6, 1)]]
    assert _ap(preds, gts)["per_class"][1] == pytest.approx(5 / 9)


def test_duplicate_detection_is_false_positive():
    gts = [[((0, 0, 10, 10), 1), ((40, 40, 50, 50), 1)]]
    # TP, duplicate (FP), TP: points (1, .5), (2/3, 1) -> envelope: 0.5*1 + 0.5*2/3
    preds = [[((0, 0, 10, 10), 0.9, 1), ((0, 0, 10, 9), 0.8, 1), ((40, 40, 50, 50), 0.7, 1)]]
    assert _ap(preds, gts)["per_class"][1] == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_iou_threshold_is_inclusive():
    gts = [[((0, 0, 10, 10), 1)]]
    half = [[((0, 0, 10, 5), 0.9, 1)]]  # IoU exactly 0.5
    assert _ap(half, gts)["per_class"][1] == 1.0
    assert _ap([[((0, 0, 10, 4.9), 0.9, 1)]], gts)["per_class"][1] == 0.0


def test_score_ties_do_not_depend_on_order():
    # two GT, two tied detections: one TP, one FP -> one curve point (R .5, P .5): AP .25
    gts = [[((0, 0, 10, 10), 1)], [((0, 0, 10, 10), 1)]]
    a = _ap([[((0, 0, 10, 10), 0.5, 1)], [((50, 50, 60, 60), 0.5, 1)]], gts)["per_class"][1]
    b = _ap([[((50, 50, 60, 60), 0.5, 1)], [((0, 0, 10, 10), 0.5, 1)]], gts)["per_class"][1]
    assert a == pytest.approx(0.25) and b == pytest.approx(0.25)


def test_no_ground_truth_class_is_nan_and_excluded():
    gts = [[((0, 0, 10, 10), 1)]]
    res = _ap([[((0, 0, 10, 10), 0.9, 1), ((0, 0, 5, 5), 0.9, 2)]], gts)
    assert res["per_class"][1] == 1.0
    assert math.isnan(res["per_class"][2])
    assert res["mean"] == 1.0
    empty = _ap([[((0, 0, 5, 5), 0.3, 1)]], [[]])
    assert math.isnan(empty["mean"])


def test_difficult_ignored():
    gts = [[((0, 0, 10, 10), 1), ((40, 40, 50, 50), 1)]]
    diff = [np.array([False, True])]
    # det on the difficult box is ignored; the other is a TP -> AP 1 with npos 1
    preds = [[((40, 40, 50, 50), 0.95, 1), ((0, 0, 10, 10), 0.9, 1)]]
    res = _ap(preds, gts, difficult=diff)
    assert res["per_class"][1] == 1.0 and res["num_gt"][1] == 1


def test_multiclass_mean_and_label_mismatch():
    gts = [[((0, 0, 10, 10), 1), ((20, 20, 30, 30), 2)]]
    preds = [[((0, 0, 10, 10), 0.9, 1), ((20, 20, 30, 30), 0.8, 1)]]  # second has wrong class
    res = _ap(preds, gts)
    assert res["per_class"] == {1: pytest.approx(1.0), 2: 0.0}
    assert res["mean"] == pytest.approx(0.5)


def test_voc_ap_envelope():
    # precision rises after a dip: the envelope lifts the dip
    assert voc_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 0.75])) == pytest.approx(0.5 + 0.5 * 0.75)


def _random_scene(rng, n_images=12, n_classes=2):
    gb, gl, pb, ps, pl = [], [], [], [], []
    for _ in range(n_images):
        # non-overlapping GT on a grid, so VOC's and COCO's matching rules coincide
        cells = rng.choice(16, size=rng.integers(0, 5), replace=False)
        boxes = []
        for c in cells:
            x0, y0 = (c % 4) * 50, (c // 4) * 50
            w, h = rng.uniform(15, 40, 2)
            boxes.append([x0, y0, x0 + w, y0 + h])
        boxes = np.array(boxes, float).reshape(-1, 4)
        labels = rng.integers(1, n_classes + 1, len(boxes))
        gb.append(boxes)
        gl.append(labels)
        dets, scores, dl = [], [], []
        for b, lab in zip(boxes, labels):
            if rng.random() < 0.8:
                dets.append(b + rng.normal(0, 4, 4))
                scores.append(rng.random())
                dl.append(lab if rng.random() < 0.9 else 3 - lab)
        for _ in range(rng.integers(0, 4)):  # background false positives
            x, y = rng.uniform(0, 160, 2)
            dets.append([x, y, x + rng.uniform(5, 40), y + rng.uniform(5, 40)])
            scores.append(rng.random())
            dl.append(rng.integers(1, n_classes + 1))
        pb.append(np.array(dets, float).reshape(-1, 4))
        ps.append(np.array(scores, float))
        pl.append(np.array(dl, int))
    return pb, ps, pl, gb, gl


def _coco_ap(pb, ps, pl, gb, gl, n_classes):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images = [{"id": i + 1, "width": 250, "height": 250} for i in range(len(gb))]
    anns, dts = [], []
    for i, (b, lab) in enumerate(zip(gb, gl)):
        for box, c in zip(b, lab):
            w, h = box[2] - box[0], box[3] - box[1]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(c),
                         "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0})
    for i, (b, s, lab) in enumerate(zip(pb, ps, pl)):
        for box, sc, c in zip(b, s, lab):
            dts.append({"image_id": i + 1, "category_id": int(c), "score": float(sc),
                        "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns,
                  "categories": [{"id": c} for c in range(1, n_classes + 1)]}
    gt.createIndex()
    dt = gt.loadRes(dts)
    ev = COCOeval(gt, dt, "bbox")
    ev.params.iouThrs = np.array([0.5])
    ev.params.maxDets = [1000]
    ev.params.areaRng = [[0, 1e10]]
    ev.params.areaRngLbl = ["all"]
    ev.evaluate()
    ev.accumulate()
    prec = ev.eval["precision"][0, :, :, 0, 0]  # [R, K]
    return {c + 1: float(np.mean(prec[:, c])) for c in range(n_classes)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_pycocotools(seed):
    """Same predictions through pycocotools (iouThrs=[0.5]): COCO samples the same precision
    envelope at 101 recall points instead of integrating it exactly, which moves AP by at most
    about 1/101 per recall step; with non-overlapping GT the matching rules agree, so the
    difference must stay within 0.02 (and be non-zero only from the interpolation)."""
    rng = np.random.default_rng(seed)
    pb, ps, pl, gb, gl = _random_scene(rng)
    ours = average_precision(pb, ps, pl, gb, gl)["per_class"]
    theirs = _coco_ap(pb, ps, pl, gb, gl, 2)
    for c in (1, 2):
        assert ours[c] == pytest.approx(theirs[c], abs=0.02), (c, ours[c], theirs[c])
    assert 0.2 < ours[1] < 0.99  # a non-trivial case


class _OracleModel(torch.nn.Module):
    """Predicts fixed boxes per call order; stands in for a detector in eval mode."""

    def __init__(self, outputs):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.outputs = list(outputs)

    def forward(self, images):
        return [self.outputs.pop(0) for _ in images]


def test_evaluate_detector_and_plot(tmp_path):
    data = [(torch.rand(3, 32, 32), {"boxes": torch.tensor([[2.0, 2, 12, 12]]), "labels": torch.tensor([1])}),
            (torch.rand(3, 32, 32), {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)})]
    outs = [{"boxes": torch.tensor([[2.0, 2, 12, 12]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])},
            {"boxes": torch.tensor([[0.0, 0, 5, 5]]), "scores": torch.tensor([0.95]), "labels": torch.tensor([1])}]
    model = _OracleModel(outs)
    res = evaluate_detector(model, data, device="cpu", batch_size=2, class_names=["bird"])
    assert res["num_images"] == 2
    assert res["per_class"] == {"bird": pytest.approx(0.5)}  # FP ranked first, then the TP
    assert res["ap50"] == pytest.approx(0.5)
    assert len(res["predictions"]) == 2 and res["predictions"][1]["scores"][0] == pytest.approx(0.95)
    png = plot_pr_curves(res, tmp_path / "pr.png")
    assert png.stat().st_size > 1000
