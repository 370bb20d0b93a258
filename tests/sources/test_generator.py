"""GAN training, checkpoints, generator loading and the generated-object source."""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from synthdet.sources.base import ObjectSample, ObjectSource
from synthdet.sources.gan import (
    GanConfig,
    build_gan,
    diff_augment,
    feature_network,
    fit_gan,
    frechet_distance,
    gan_fid,
    image_features,
    load_gan,
    read_checkpoint,
)
from synthdet.sources.generator import GeneratorObjectSource, ImageGenerator, load_generator, sample_images
from synthdet.utils.config import ConfigError, from_dict
from synthdet.utils.image import read_image, write_image

TINY = dict(resolution=32, channels=4, latent_dim=8, batch_size=4, fid_every=0, grid_samples=4,
            sample_every=0, checkpoint_every=1, device="cpu")


def _object_images(folder: Path, n: int = 6, size: int = 40) -> Path:
    """Coloured discs on grey: a tiny 'classification' folder (plus one unreadable file)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = np.full((size, size + 6, 3), 90, np.uint8)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.circle(img, (size // 2 + 3, size // 2), int(rng.integers(8, 16)), colour, -1)
        write_image(folder / f"obj_{i}.png", img)
    (folder / "broken.jpg").write_bytes(b"not an image")
    return folder


class _TinyGen(nn.Module):
    """latent [B, 6] -> [B, 3, 16, 16] in [-1, 1]; declares its latent_dim."""

    def __init__(self) -> None:
        super().__init__()
        self.latent_dim = 6
        self.fc = nn.Linear(6, 3 * 16 * 16)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(z)).view(z.shape[0], 3, 16, 16)


class _BrightSegmenter:
    """Stand-in segmenter: foreground = pixels brighter than the image mean."""

    name = "bright"

    def cache_key(self) -> str:
        return "bright"

    def segment(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return [(im.mean(2) > im.mean()).astype(np.float32) for im in images]


def _scripted(tmp_path: Path) -> Path:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        mod = torch.jit.script(_TinyGen())
    path = tmp_path / "tiny_gen.pt"
    torch.jit.save(mod, str(path))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("gan")
    images = _object_images(root / "images")
    res = fit_gan(images, from_dict(GanConfig, {**TINY, "iterations": 2}), root / "run", progress=False)
    return images, res.checkpoint


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="resolution"):
        GanConfig(resolution=48)
    with pytest.raises(ValueError, match="diffaugment"):
        GanConfig(diffaugment="color,zoom")
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(GanConfig, {"resolutoin": 64})


@pytest.mark.parametrize("res", [32, 64, 128])
def test_network_shapes(res: int) -> None:
    gen, disc = build_gan(GanConfig(resolution=res, channels=4, latent_dim=8))
    x = gen(torch.randn(2, 8))
    assert x.shape == (2, 3, res, res) and x.abs().max() <= 1
    assert disc(x).shape == (2,)


def test_build_is_seeded_and_leaves_global_rng_alone() -> None:
    state = torch.get_rng_state()
    a, _ = build_gan(GanConfig(**{**TINY, "seed": 3}))
    b, _ = build_gan(GanConfig(**{**TINY, "seed": 3}))
    c, _ = build_gan(GanConfig(**{**TINY, "seed": 4}))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.fc.weight, b.fc.weight) and not torch.equal(a.fc.weight, c.fc.weight)


def test_diff_augment_deterministic_and_differentiable() -> None:
    x = (torch.rand(3, 3, 32, 32) * 2 - 1).requires_grad_(True)
    y1 = diff_augment(x, "color,translation,cutout", torch.Generator().manual_seed(1))
    y2 = diff_augment(x, "color,translation,cutout", torch.Generator().manual_seed(1))
    assert y1.shape == x.shape and torch.equal(y1, y2)
    # cutout zeroes a 16x16 square (at least partly inside): some exact zeros per image
    assert ((y1 == 0).flatten(1).sum(1) >= 8 * 8 * 3).all()
    y1.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.equal(diff_augment(x, "", torch.Generator()), x)


def test_translation_is_an_integer_shift() -> None:
    x = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).view(2, 3, 16, 16) + 1
    y = diff_augment(x, "translation", torch.Generator().manual_seed(0))
    for k in range(2):
        nz = (y[k, 0] != 0).nonzero()
        y0, x0 = nz.min(0).values.tolist()
        ys, xs = y[k, 0, y0, x0].item(), x[k, 0].eq(y[k, 0, y0, x0]).nonzero()[0].tolist()
        dy, dx = y0 - xs[0], x0 - xs[1]
        assert abs(dy) <= 2 and abs(dx) <= 2 and ys > 0
        shifted = torch.roll(x[k], (dy, dx), (1, 2))
        keep = y[k] != 0
        assert torch.equal(y[k][keep], shifted[keep])


def test_one_training_step_32px(tmp_path: Path) -> None:
    images = _object_images(tmp_path / "images")
    cfg = GanConfig(**{**TINY, "iterations": 1, "sample_every": 1})
    before, _ = build_gan(cfg)
    res = fit_gan(images, cfg, tmp_path / "run", progress=False)
    assert res.steps == 1 and res.checkpoint.is_file()
    ckpt = read_checkpoint(res.checkpoint)
    assert ckpt["data"] == {"images_dir": str(images), "num_images": 6, "skipped": 1}
    row = ckpt["history"][-1]
    assert row["step"] == 1 and np.isfinite(row["loss_d"]) and np.isfinite(row["loss_g"])
    after = ckpt["generator"]
    assert not torch.equal(after["fc.weight"], before.fc.weight)  # the generator was updated
    grid = read_image(tmp_path / "run" / "samples" / "step_000001.png")
    assert grid.shape[0] > 32 and grid.std() > 0
    assert (tmp_path / "run" / "samples" / "real.png").is_file()
    assert (tmp_path / "run" / "config.yaml").is_file()


def test_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    images = _object_images(tmp_path / "images")
    cfg2 = GanConfig(**{**TINY, "iterations": 2})
    straight = fit_gan(images, cfg2, tmp_path / "a", progress=False)
    fit_gan(images, GanConfig(**{**TINY, "iterations": 1}), tmp_path / "b", progress=False)
    resumed = fit_gan(images, cfg2, tmp_path / "b", progress=False)
    assert resumed.steps == 2
    a, b = read_checkpoint(straight.checkpoint), read_checkpoint(resumed.checkpoint)
    for key in ("generator", "generator_ema", "discriminator"):
        for name in a[key]:
            torch.testing.assert_close(a[key][name], b[key][name], rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="channels"):
        fit_gan(images, GanConfig(**{**TINY, "iterations": 3, "channels": 8}), tmp_path / "b", progress=False)


def test_time_budget_stops_with_checkpoint_and_metric(tmp_path: Path) -> None:
    images = _object_images(tmp_path / "images")
    cfg = GanConfig(**{**TINY, "iterations": 50, "fid_every": 1000, "fid_samples": 8, "fid_features": "random"})
    res = fit_gan(images, cfg, tmp_path / "run", progress=False, max_seconds=0.0)
    assert res.stopped_early and res.steps == 1
    assert read_checkpoint(res.checkpoint)["step"] == 1 and res.last_grid is not None and res.last_grid.is_file()
    assert res.fid is not None and np.isfinite(res.fid) and res.history[-1]["fid"] == res.fid
    # the stand-alone metric on the saved checkpoint reproduces the in-training value
    again = gan_fid(res.checkpoint, images, samples=8, features="random")
    assert again == pytest.approx(res.fid, rel=1e-4)


def test_no_usable_images_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"junk")
    with pytest.raises(ValueError, match="no usable images"):
        fit_gan(tmp_path / "bad", GanConfig(**TINY, iterations=1), tmp_path / "run", progress=False)


def test_checkpoint_round_trip(trained: tuple[Path, Path], tmp_path: Path) -> None:
    _, ckpt = trained
    gen, cfg = load_gan(ckpt)
    assert cfg.resolution == 32 and cfg.latent_dim == 8
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        direct = gen(z)
    g1 = load_generator(ckpt)
    g2 = load_generator(ckpt.parent)  # the run folder works too
    assert g1.latent_dim == 8 and g1.output_range == (-1.0, 1.0)
    a = g1.generate(z.numpy())
    np.testing.assert_array_equal(a, g2.generate(z.numpy()))
    expected = ((direct + 1) / 2 * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(a, expected)
    assert a.shape == (3, 32, 32, 3)


def test_sampling_is_deterministic_per_seed(trained: tuple[Path, Path]) -> None:
    _, ckpt = trained
    src = GeneratorObjectSource(ckpt, segmenter=None, class_name="bird", size=48)
    assert isinstance(src, ObjectSource) and src.class_names == ["bird"]
    s1 = src.draw(np.random.default_rng(5))
    s2 = src.draw(np.random.default_rng(5))
    s3 = src.draw(np.random.default_rng(6))
    assert isinstance(s1, ObjectSample) and s1.label == 1
    assert s1.image.shape == (48, 48, 3) and s1.image.dtype == np.uint8
    assert s1.mask is None  # no segmenter: naive pasting
    assert src.draw(np.random.default_rng(5)).key == GeneratorObjectSource(ckpt, segmenter="none", size=48).draw(
        np.random.default_rng(5)).key
    np.testing.assert_array_equal(s1.image, s2.image)
    assert s1.key == s2.key != s3.key and s1.key.startswith("generator:")
    assert not np.array_equal(s1.image, s3.image)
    # the same latents, batched: same keys, pixels equal up to rounding
    many = src.draw_many(np.random.default_rng(5), 3)
    rng = np.random.default_rng(5)
    singles = [src.draw(rng) for _ in range(3)]
    assert [m.key for m in many] == [s.key for s in singles]
    for m, s in zip(many, singles):
        assert np.abs(m.image.astype(int) - s.image.astype(int)).max() <= 1
    # sample_images: image i depends on (seed, i) only, whatever the batch size
    gen = src.generator
    a = sample_images(gen, 5, seed=1, batch=2)
    b = sample_images(gen, 3, seed=1, start=2, batch=3)
    for x, y in zip(a[2:], b):
        assert np.abs(x.astype(int) - y.astype(int)).max() <= 1


def test_torchscript_generator_plugs_into_the_source(tmp_path: Path) -> None:
    path = _scripted(tmp_path)
    gen = load_generator(path)
    assert gen.latent_dim == 6  # read from the module attribute
    src = GeneratorObjectSource(gen, segmenter=_BrightSegmenter(), size=32)
    s = src.draw(np.random.default_rng(0))
    assert s.image.shape == (32, 32, 3) and s.mask.shape == (32, 32)
    assert set(np.unique(s.mask)) <= {0.0, 1.0} and 0 < s.mask.mean() < 1
    np.testing.assert_array_equal(s.image, src.draw(np.random.default_rng(0)).image)
    # the source pickles (e.g. into DataLoader workers) and reloads the module from its spec
    clone = pickle.loads(pickle.dumps(src))
    np.testing.assert_array_equal(clone.draw(np.random.default_rng(0)).image, s.image)
    # pixel values follow the declared output range
    z = np.random.default_rng(1).standard_normal((1, 6)).astype(np.float32)
    raw = torch.jit.load(str(path))(torch.from_numpy(z))
    as01 = load_generator(path, output_range=(0.0, 1.0)).generate(z)
    expected = (raw.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(as01, expected)


def test_torch_export_generator(tmp_path: Path) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        mod = _TinyGen().eval()
    program = torch.export.export(mod, (torch.randn(2, 6),), dynamic_shapes={"z": {0: torch.export.Dim("batch")}})
    torch.export.save(program, str(tmp_path / "tiny.pt2"))
    gen = load_generator(tmp_path / "tiny.pt2")
    assert gen.latent_dim == 6  # from the exported input shape
    src = GeneratorObjectSource(gen, size=None)
    s = src.draw(np.random.default_rng(0))
    z = np.random.default_rng(0).standard_normal((1, 6)).astype(np.float32)
    with torch.no_grad():
        expected = ImageGenerator(mod, 6).generate(z)[0]
    assert s.image.shape == (16, 16, 3)
    assert np.abs(s.image.astype(int) - expected.astype(int)).max() <= 1


def test_torchscript_generator_renders_in_the_stream(tmp_path: Path) -> None:
    synthesis = pytest.importorskip("synthdet.synthesis")
    from synthdet.sources.backgrounds import BackgroundSource

    bg_dir = tmp_path / "bg"
    rng = np.random.default_rng(0)
    for i in range(2):
        write_image(bg_dir / f"bg{i}.jpg", rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    src = GeneratorObjectSource(_scripted(tmp_path), segmenter=None, size=32)
    cfg = synthesis.SynthConfig(canvas_size=96, object_size=32)
    stream = synthesis.SynthStream(src, BackgroundSource.from_folder(bg_dir), cfg, seed=0)
    sample = stream.render(0)
    assert sample.image.shape == (96, 96, 3)
    assert len(sample.boxes) >= 1 and all(k.startswith("generator:") for k in sample.keys)
    np.testing.assert_array_equal(stream.render(0).image, sample.image)


def test_entry_point_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_gens.py").write_text(textwrap.dedent("""
        import torch

        def make():
            def fn(z):
                return torch.sigmoid(z[:, :3, None, None].expand(-1, 3, 8, 8))
            fn.latent_dim = 4
            fn.output_range = (0.0, 1.0)
            return fn
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    gen = load_generator("my_gens:make")
    assert gen.latent_dim == 4 and gen.output_range == (0.0, 1.0)
    src = GeneratorObjectSource(gen, size=None)
    s = src.draw(np.random.default_rng(0))
    z = np.random.default_rng(0).standard_normal(4).astype(np.float32)
    expected = np.round(1 / (1 + np.exp(-z[:3].astype(np.float64))) * 255)
    assert s.image.shape == (8, 8, 3)
    np.testing.assert_allclose(s.image[0, 0].astype(float), expected, atol=1)
    with pytest.raises(ValueError, match="no attribute"):
        load_generator("my_gens:nope")
    with pytest.raises(ValueError, match="cannot import"):
        load_generator("no_such_module_xyz:make")


def test_bad_specs_and_missing_latent_dim(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_generator(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="neither"):
        load_generator("not a spec")
    junk = tmp_path / "junk.pt"
    torch.save({"weights": torch.zeros(2)}, junk)
    with pytest.raises(ValueError, match="not a synthdet GAN checkpoint"):
        load_generator(junk)
    with pytest.raises(ValueError, match="latent_dim"):
        GeneratorObjectSource(lambda z: z, segmenter=None)
    with pytest.raises(TypeError, match=r"get_segmenter\('grabcut'\)"):  # names are resolved by the caller
        GeneratorObjectSource(lambda z: z, segmenter="grabcut", latent_dim=4)
    bad = ImageGenerator(lambda z: z, latent_dim=5)
    with pytest.raises(ValueError, match="expected"):
        bad.generate(np.zeros((1, 5), np.float32))


def test_frechet_distance_on_random_features() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (40, 3, 32, 32), dtype=np.uint8)
    b = np.clip(a.astype(int) // 2 + 100, 0, 255).astype(np.uint8)
    net = feature_network("random")
    fa = image_features(net, torch.from_numpy(a), torch.device("cpu"))
    fb = image_features(net, torch.from_numpy(b), torch.device("cpu"))
    assert fa.shape == (40, 256)
    assert abs(frechet_distance(fa, fa)) < 1e-6 * max(1.0, float(np.trace(np.cov(fa, rowvar=False))))
    assert frechet_distance(fa, fb) > 1e-3


def test_cli_sample_writes_images(tmp_path: Path) -> None:
    from synthdet.cli import main

    path = _scripted(tmp_path)
    out = tmp_path / "out"
    assert main(["generator", "sample", "--generator", str(path), "--count", "3", "--out", str(out)]) == 0
    files = sorted(out.glob("sample_*.png"))
    assert len(files) == 3 and (out / "grid.png").is_file()
    assert read_image(files[0]).shape == (16, 16, 3)
    assert main(["generator", "sample", "--generator", str(tmp_path / "nope.pt"), "--count", "1",
                 "--out", str(out)]) == 1


def test_cli_fit(tmp_path: Path) -> None:
    from synthdet.cli import main
    from synthdet.utils.config import dump_yaml

    images = _object_images(tmp_path / "images")
    dump_yaml({k: v for k, v in TINY.items() if k != "resolution"}, tmp_path / "gan.yaml")
    out = tmp_path / "run"
    assert main(["generator", "fit", "--images", str(images), "--out", str(out), "--config",
                 str(tmp_path / "gan.yaml"), "--resolution", "32", "--iterations", "1"]) == 0
    assert read_checkpoint(out / "checkpoint.pt")["step"] == 1
    (tmp_path / "bad.yaml").write_text("resolutoin: 32\n")
    assert main(["generator", "fit", "--images", str(images), "--out", str(out), "--config",
                 str(tmp_path / "bad.yaml")]) == 1
