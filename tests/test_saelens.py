"""SAELens on-disk format: safetensors bytes against the spec, round trips, hand-written folders, bad inputs.

The reference SAELens forward pass below is written from ``sae_lens/saes/{standard,topk,jumprelu}_sae.py``
(version 6) in numpy, float64; the reference safetensors writer from the format description
(8-byte little-endian header length, JSON header, raw little-endian bytes).
"""

import json
import struct

import jax
import numpy as np
import pytest

from jaxinterp import directions as jd
from jaxinterp.datasets import make_superposition_data
from jaxinterp.directions import saelens as sl

try:
    import safetensors.numpy as safetensors_numpy
except ImportError:  # the builtin reader/writer is still tested against the spec
    safetensors_numpy = None
needs_package = pytest.mark.skipif(safetensors_numpy is None, reason="safetensors not installed")

# SAELens 6 config fields (SAEConfig + TopKSAEConfig) and what `from_dict` needs
SAELENS_FIELDS = {"architecture", "d_in", "d_sae", "dtype", "device", "apply_b_dec_to_input",
                  "normalize_activations", "reshape_activations", "metadata", "k", "rescale_acts_by_decoder_norm"}
SAELENS_DTYPES = {"float32", "float64", "float16", "bfloat16"}


# ---------------------------------------------------------------- independent references


def spec_safetensors(tensors: dict, metadata=None) -> bytes:
    """Safetensors bytes written straight from the format description (no padding, insertion order)."""
    codes = {np.dtype("<f4"): "F32", np.dtype("<f8"): "F64", np.dtype("<i8"): "I64", np.dtype("<f2"): "F16"}
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, arr in tensors.items():
        arr = np.asarray(arr)
        data = arr.astype(arr.dtype.newbyteorder("<")).tobytes(order="C")
        header[name] = {"dtype": codes[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def saelens_forward(w: dict, cfg: dict, x: np.ndarray):
    """SAELens 6 ``encode`` and ``forward`` (no error term), numpy float64."""
    x = np.asarray(x, np.float64)
    sae_in = x - w["b_dec"] * cfg.get("apply_b_dec_to_input", True)
    pre = sae_in @ w["W_enc"] + w["b_enc"]
    arch, dec = cfg["architecture"], w["W_dec"]
    if arch == "standard":
        f = np.maximum(pre, 0)
    elif arch == "jumprelu":
        f = np.maximum(pre, 0) * (pre > w["threshold"])
    else:
        norms = np.linalg.norm(dec, axis=-1) if cfg.get("rescale_acts_by_decoder_norm") else np.ones(len(dec))
        pre = pre * norms
        idx = np.argsort(-pre, axis=-1, kind="stable")[:, : cfg["k"]]
        f = np.zeros_like(pre)
        np.put_along_axis(f, idx, np.maximum(np.take_along_axis(pre, idx, -1), 0), -1)
        return f, (f / norms) @ dec + w["b_dec"]
    return f, f @ dec + w["b_dec"]


def write_folder(folder, w: dict, cfg: dict):
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: np.asarray(v, np.float32) for k, v in w.items()}
    (folder / "sae_weights.safetensors").write_bytes(spec_safetensors(tensors))
    (folder / "cfg.json").write_text(json.dumps(cfg))


def random_weights(rng, d_in=12, d_sae=20, threshold=False):
    w = {"W_enc": rng.normal(size=(d_in, d_sae)), "b_enc": rng.normal(size=d_sae) * 0.3,
         "W_dec": rng.normal(size=(d_sae, d_in)), "b_dec": rng.normal(size=d_in)}
    if threshold:
        w["threshold"] = rng.uniform(0.0, 1.0, size=d_sae)
    return {k: np.asarray(v, np.float32).astype(np.float64) for k, v in w.items()}  # float32-representable


# ---------------------------------------------------------------- safetensors


def test_builtin_writer_matches_the_spec(tmp_path):
    """Header length, JSON entries, 8-byte padding and raw little-endian bytes, read back by hand."""
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([1.5, -2.25], np.float64)
    path = sl.save_safetensors({"b": b, "a": a}, tmp_path / "t.safetensors", metadata={"k": "v"}, backend="builtin")
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0
    header = json.loads(raw[8:8 + n])
    assert header["__metadata__"] == {"k": "v"}
    assert header["a"] == {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}
    assert header["b"] == {"dtype": "F64", "shape": [2], "data_offsets": [24, 40]}
    body = raw[8 + n:]
    assert len(body) == 40
    np.testing.assert_array_equal(np.frombuffer(body[:24], "<f4").reshape(2, 3), a)
    np.testing.assert_array_equal(np.frombuffer(body[24:], "<f8"), b)


def test_builtin_reader_reads_spec_bytes(tmp_path):
    t = {"x": np.arange(5, dtype=np.int64), "y": np.linspace(0, 1, 6).reshape(3, 2).astype(np.float16),
         "z": np.array(3.0, np.float32)}
    (tmp_path / "s.safetensors").write_bytes(spec_safetensors(t, {"a": "b"}))
    got = sl.load_safetensors(tmp_path / "s.safetensors", backend="builtin")
    assert set(got) == set(t)
    for k in t:
        assert got[k].dtype == t[k].dtype and got[k].shape == t[k].shape
        np.testing.assert_array_equal(got[k], t[k])


@pytest.mark.parametrize("backend", ["builtin", "auto"])
def test_bfloat16_and_big_endian(tmp_path, backend):
    import ml_dtypes
    t = {"h": np.array([1.0, -0.5, 3.0], ml_dtypes.bfloat16), "be": np.array([1.0, 2.0], ">f4")}
    sl.save_safetensors(t, tmp_path / "b.safetensors", backend="builtin")
    raw = (tmp_path / "b.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    entry = json.loads(raw[8:8 + n])["h"]
    assert entry["dtype"] == "BF16"
    lo = 8 + n + entry["data_offsets"][0]
    assert raw[lo:lo + 2] == np.array([1.0], "<f4").tobytes()[2:]  # bfloat16 = upper half of the float32
    got = sl.load_safetensors(tmp_path / "b.safetensors", backend=backend)
    np.testing.assert_array_equal(got["h"].astype(np.float32), [1.0, -0.5, 3.0])
    np.testing.assert_array_equal(got["be"], [1.0, 2.0])
    assert got["be"].dtype == np.dtype("<f4")


@needs_package
def test_builtin_and_package_agree_both_ways(tmp_path):
    rng = np.random.default_rng(0)
    t = {"W": rng.normal(size=(4, 3)).astype(np.float32), "v": rng.normal(size=7), "i": np.arange(3, dtype=np.int32)}
    sl.save_safetensors(t, tmp_path / "ours.safetensors", backend="builtin")
    theirs = safetensors_numpy.load_file(str(tmp_path / "ours.safetensors"))
    safetensors_numpy.save_file(t, str(tmp_path / "pkg.safetensors"))
    ours = sl.load_safetensors(tmp_path / "pkg.safetensors", backend="builtin")
    for got in (theirs, ours):
        assert set(got) == set(t)
        for k in t:
            assert got[k].dtype == t[k].dtype
            np.testing.assert_array_equal(got[k], t[k])


@pytest.mark.parametrize("mutate, match", [
    (lambda raw: raw[:5], "shorter than"),
    (lambda raw: struct.pack("<Q", 10**6) + raw[8:], "exceeds the file size"),
    (lambda raw: raw[:-4], "do not match"),
    (lambda raw: raw + b"\0" * 4, "trailing bytes"),
    (lambda raw: raw[:8] + b"[" + raw[9:], "not valid JSON"),
    (lambda raw: raw.replace(b'"F32"', b'"X32"'), "bad header entry"),
])
def test_corrupt_safetensors_named(tmp_path, mutate, match):
    raw = spec_safetensors({"a": np.ones(3, np.float32)})
    (tmp_path / "bad.safetensors").write_bytes(mutate(raw))
    with pytest.raises(ValueError, match=match) as err:
        sl.load_safetensors(tmp_path / "bad.safetensors", backend="builtin")
    assert "bad.safetensors" in str(err.value)


# ---------------------------------------------------------------- round trip of trained SAEs


@pytest.fixture(scope="module")
def data():
    x = make_superposition_data(0, 3000, 24, 10, 0.08)[0]
    return np.asarray(x[:2500]), np.asarray(x[2500:])


_FITTED = {}


def _fit(x, kind):
    """A briefly trained SAE (z-scored inputs), cached per kind: the data fixture is fixed for the module."""
    if kind not in _FITTED:
        learner = jd.sae(24, kind=kind, k=3, steps=150, batch_size=128, normalize="zscore",
                         coef={"relu": 0.3, "jumprelu": 0.05}.get(kind))
        _FITTED[kind] = jd.fit(learner, x, key=jax.random.key(1))
    return _FITTED[kind]


@pytest.mark.parametrize("kind", ["relu", pytest.param("topk", marks=pytest.mark.slow),
                                  pytest.param("batchtopk", marks=pytest.mark.slow), "jumprelu"])
@pytest.mark.parametrize("normalize", ["none", "zscore"])
def test_round_trip_trained_sae(tmp_path, data, kind, normalize):
    """load(save(d)) encodes and reconstructs like d; normalisation folded into the weights.

    ``normalize="none"``: the same trained SAE with its normalisation removed (center 0, scale 1;
    still an SAE, on other coordinates), for which the export is exact arithmetic.
    """
    x, xe = data
    d = _fit(x, kind)
    if normalize == "none":
        xe = (xe - np.asarray(d.center)) / np.asarray(d.scale)  # inputs on the scale this SAE was trained on
        d = d.replace(center=np.zeros_like(d.center), scale=np.ones_like(d.scale))
    else:
        assert np.ptp(np.asarray(d.scale)) > 0  # per-feature scale: the fold is not trivial
    for backend in ("builtin", "auto"):
        folder = sl.save_saelens(d, tmp_path / f"sae_{backend}", hook_name="blocks.0.hook_mlp_out", backend=backend)
        back = sl.load_saelens(folder, backend=backend)
        assert back.method == d.method and type(back.encoder) is type(d.encoder)
        codes, back_codes = np.asarray(d.encode(xe)), np.asarray(back.encode(xe))
        assert np.mean(codes != 0) > 0.005  # the test is not vacuous: latents are active
        # fold is exact in real arithmetic; float32 rounding of W/scale is the only difference
        tol = 1e-6 if normalize == "none" else 2e-5
        np.testing.assert_allclose(back_codes, codes, atol=tol * max(1.0, np.abs(codes).max()), rtol=0)
        np.testing.assert_allclose(np.asarray(back.reconstruct(xe)), np.asarray(d.reconstruct(xe)),
                                   atol=tol * max(1.0, np.abs(xe).max()), rtol=0)


@pytest.mark.parametrize("kind, arch", [("relu", "standard"), ("topk", "topk"), ("batchtopk", "jumprelu"),
                                        ("jumprelu", "jumprelu")])
def test_written_folder_is_saelens_and_matches_its_formula(tmp_path, data, kind, arch):
    """cfg.json has SAELens's fields; SAELens's own formula on the written tensors gives our codes."""
    x, xe = data
    d = _fit(x, kind)
    folder = sl.save_saelens(d, tmp_path / "sae", hook_name="h", model_name="toy")
    cfg = json.loads((folder / "cfg.json").read_text())
    assert set(cfg) <= SAELENS_FIELDS
    assert cfg["architecture"] == arch and cfg["d_in"] == 10 and cfg["d_sae"] == 24
    assert cfg["dtype"] in SAELENS_DTYPES and cfg["device"] == "cpu"
    assert cfg["apply_b_dec_to_input"] is True and cfg["normalize_activations"] == "none"
    assert int(cfg["metadata"]["sae_lens_version"].split(".")[0]) >= 6  # skips SAELens's pre-6 translation
    assert cfg["metadata"]["hook_name"] == "h" and cfg["metadata"]["model_name"] == "toy"
    if arch == "topk":
        assert cfg["k"] == 3 and cfg["rescale_acts_by_decoder_norm"] is False
    w = {k: np.asarray(v, np.float64) for k, v in sl.load_safetensors(folder / "sae_weights.safetensors").items()}
    expected = {"W_enc": (10, 24), "b_enc": (24,), "W_dec": (24, 10), "b_dec": (10,)}
    if arch == "jumprelu":
        expected["threshold"] = (24,)
    assert {k: v.shape for k, v in w.items()} == expected
    if kind == "batchtopk":
        np.testing.assert_array_equal(w["threshold"], float(d.encoder.threshold))
    f, x_hat = saelens_forward(w, cfg, xe)
    np.testing.assert_allclose(np.asarray(d.encode(xe)), f, atol=2e-5 * max(1.0, np.abs(f).max()))
    np.testing.assert_allclose(np.asarray(d.reconstruct(xe)), x_hat, atol=2e-5 * max(1.0, np.abs(xe).max()))


# the SAELens training variants: unconstrained decoder, directly trained / log JumpReLU thresholds, target L0
VARIANTS = {
    "relu_free": ("relu", "standard", dict(decoder="free", coef=0.3)),
    "topk_free": ("topk", "topk", dict(decoder="free")),
    "batchtopk_free": ("batchtopk", "jumprelu", dict(decoder="free")),
    "jumprelu_target_l0": ("jumprelu", "jumprelu", dict(target_l0=4.0, coef=1.0, init_threshold=0.05)),
    "jumprelu_log_free": ("jumprelu", "jumprelu", dict(threshold_param="log", decoder="free", coef=0.05)),
}


@pytest.mark.slow  # each trains an SAE (10-15 s on a 2-core CPU); the variants share the saved format
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_round_trip_training_variants(tmp_path, data, variant):
    """Each training variant exports as a plain SAELens architecture: SAELens's formula on the written
    tensors and load(save(d)) both encode and reconstruct like d (free decoders are folded, unit rows)."""
    x, xe = data
    kind, arch, options = VARIANTS[variant]
    d = jd.fit(jd.sae(24, kind=kind, k=3, steps=120, batch_size=128, normalize="zscore", learning_rate=3e-3,
                      **options), x, key=jax.random.key(2))
    np.testing.assert_allclose(np.linalg.norm(np.asarray(d.components), axis=1), 1.0, atol=1e-5)
    folder = sl.save_saelens(d, tmp_path / variant)
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["architecture"] == arch
    w = {k: np.asarray(v, np.float64) for k, v in sl.load_safetensors(folder / "sae_weights.safetensors").items()}
    codes = np.asarray(d.encode(xe))
    assert np.mean(codes != 0) > 0.005
    f, x_hat = saelens_forward(w, cfg, xe)
    back = sl.load_saelens(folder)
    assert type(back.encoder) is type(d.encoder)
    for got, recon in ((f, x_hat), (np.asarray(back.encode(xe)), np.asarray(back.reconstruct(xe)))):
        np.testing.assert_allclose(got, codes, atol=2e-5 * max(1.0, np.abs(codes).max()), rtol=0)
        np.testing.assert_allclose(recon, np.asarray(d.reconstruct(xe)), atol=2e-5 * max(1.0, np.abs(xe).max()),
                                   rtol=0)
    if kind == "jumprelu":
        np.testing.assert_allclose(w["threshold"], np.asarray(d.encoder.threshold), rtol=1e-6)


@pytest.mark.parametrize("backend", ["builtin", "auto"])
def test_dtype_option(tmp_path, data, backend):
    d = _fit(data[0], "relu")
    folder = sl.save_saelens(d, tmp_path / "h", dtype="bfloat16", backend=backend)
    assert json.loads((folder / "cfg.json").read_text())["dtype"] == "bfloat16"
    raw = (folder / "sae_weights.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert json.loads(raw[8:8 + n])["W_enc"]["dtype"] == "BF16"
    back = sl.load_saelens(folder, backend=backend)
    # bfloat16 keeps 8 significant bits: relative error <= 2**-8 per entry
    ref = np.asarray(d.components) * np.asarray(d.scale)
    np.testing.assert_allclose(np.asarray(back.components), ref, rtol=2.0**-8, atol=0)
    assert not np.array_equal(np.asarray(back.components), ref)  # it was rounded


# ---------------------------------------------------------------- hand-written SAELens folders


BASE_CFG = {"d_in": 12, "d_sae": 20, "dtype": "float32", "device": "cpu", "normalize_activations": "none",
            "reshape_activations": "none",
            "metadata": {"sae_lens_version": "6.5.0", "hook_name": "blocks.3.hook_resid_pre"}}


@pytest.mark.parametrize("arch, extra", [
    ("standard", {}), ("standard", {"apply_b_dec_to_input": False}),
    ("topk", {"k": 4}), ("topk", {"k": 4, "rescale_acts_by_decoder_norm": True}),
    ("jumprelu", {}), ("jumprelu", {"apply_b_dec_to_input": False}),
])
def test_hand_written_folder_encodes_like_saelens(tmp_path, arch, extra):
    rng = np.random.default_rng(3)
    w = random_weights(rng, threshold=arch == "jumprelu")
    if arch == "jumprelu":
        w["threshold"][:3] = -0.5  # SAELens: relu(pre) * 1[pre > threshold]; negatives act like 0
    cfg = dict(BASE_CFG, architecture=arch, **extra)
    write_folder(tmp_path / "f", w, cfg)
    d = sl.load_saelens(tmp_path / "f")
    x = rng.normal(size=(64, 12)) * 2
    f, x_hat = saelens_forward(w, cfg, x)
    assert np.mean(f != 0) > 0.05
    x32 = np.asarray(x, np.float32)
    np.testing.assert_allclose(np.asarray(d.encode(x32)), f, atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(d.reconstruct(x32)), x_hat, atol=1e-4, rtol=1e-5)
    assert d.components.shape == (20, 12)
    jitted = jax.jit(lambda dirs, v: dirs.encode(v))(d, x32)  # a loaded SAE is an ordinary pytree
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(d.encode(x32)), atol=1e-6)


def test_pre_6_config_and_norm_scaling_factor(tmp_path):
    """Old field names (hook_point, activation_fn topk) and an expected-average scaling factor."""
    rng = np.random.default_rng(4)
    w = random_weights(rng)
    cfg = {"d_in": 12, "d_sae": 20, "dtype": "float32", "hook_point": "blocks.1.hook_mlp_out", "activation_fn": "topk",
           "activation_fn_kwargs": {"k": 5}, "normalize_activations": True}
    write_folder(tmp_path / "old", w, cfg)
    assert sl.saelens_config(tmp_path / "old")["metadata"]["hook_name"] == "blocks.1.hook_mlp_out"
    with pytest.raises(ValueError, match="norm_scaling_factor"):
        sl.load_saelens(tmp_path / "old")
    d = sl.load_saelens(tmp_path / "old", norm_scaling_factor=0.5)
    assert isinstance(d.encoder, jd.TopK) and d.encoder.k == 5
    x = rng.normal(size=(32, 12))
    # SAELens from_pretrained: inputs scaled by the factor, outputs divided by it
    f, x_hat = saelens_forward(w, dict(cfg, architecture="topk", k=5), 0.5 * x)
    np.testing.assert_allclose(np.asarray(d.encode(np.float32(x))), f, atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(d.reconstruct(np.float32(x))), x_hat / 0.5, atol=1e-4, rtol=1e-5)


# ---------------------------------------------------------------- bad inputs


def _good_folder(tmp_path, arch="jumprelu"):
    rng = np.random.default_rng(5)
    w = random_weights(rng, threshold=arch == "jumprelu")
    write_folder(tmp_path / "g", w, dict(BASE_CFG, architecture=arch))
    return tmp_path / "g", w


def test_missing_files_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="cfg.json"):
        sl.load_saelens(tmp_path / "nowhere")
    folder, _ = _good_folder(tmp_path)
    (folder / "sae_weights.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="sae_weights.safetensors"):
        sl.load_saelens(folder)


@pytest.mark.parametrize("change, match", [
    (lambda w, c: c.update(architecture="gated"), "'architecture' is 'gated'"),
    (lambda w, c: c.update(d_in="12"), "field 'd_in'"),
    (lambda w, c: c.pop("d_sae"), "field 'd_sae'"),
    (lambda w, c: c.update(normalize_activations="layer_norm"), "layer_norm"),
    (lambda w, c: c.update(normalize_activations="zscore"), "'normalize_activations'"),
    (lambda w, c: c.update(apply_b_dec_to_input="yes"), "'apply_b_dec_to_input'"),
    (lambda w, c: w.update(W_enc=w["W_enc"].T), "tensor 'W_enc' has shape"),
    (lambda w, c: w.update(b_dec=w["b_dec"][:5]), "tensor 'b_dec' has shape"),
    (lambda w, c: w.pop("threshold"), r"missing tensor\(s\) \['threshold'\]"),
    (lambda w, c: w.update(log_threshold=w["threshold"]), "unexpected tensor"),
    (lambda w, c: w["W_dec"].__setitem__((0, 0), np.nan), "non-finite"),
])
def test_bad_folders_named(tmp_path, change, match):
    folder, w = _good_folder(tmp_path)
    cfg = dict(BASE_CFG, architecture="jumprelu")
    change(w, cfg)
    write_folder(folder, w, cfg)
    with pytest.raises(ValueError, match=match) as err:
        sl.load_saelens(folder)
    assert str(folder) in str(err.value)


def test_bad_topk_k_named(tmp_path):
    rng = np.random.default_rng(6)
    for k, match in ((None, "field 'k'"), (0, "field 'k'"), (21, "exceeds d_sae")):
        cfg = dict(BASE_CFG, architecture="topk", **({} if k is None else {"k": k}))
        write_folder(tmp_path / "t", random_weights(rng), cfg)
        with pytest.raises(ValueError, match=match):
            sl.load_saelens(tmp_path / "t")


def test_cfg_not_json_named(tmp_path):
    folder, _ = _good_folder(tmp_path)
    (folder / "cfg.json").write_text("{architecture: ")
    with pytest.raises(ValueError, match="cfg.json: not valid JSON"):
        sl.load_saelens(folder)


def test_export_refuses_what_saelens_cannot_hold(tmp_path, data):
    x, _ = data
    km = jd.fit(jd.kmeans(4), x, key=jax.random.key(0))
    with pytest.raises(TypeError, match="no architecture for a NearestCentroid"):
        sl.save_saelens(km, tmp_path / "km")
    jr = _fit(x, "jumprelu")
    neg = jr.replace(encoder=jd.JumpReLU(jr.encoder.weight, jr.encoder.bias, threshold=-jr.encoder.threshold))
    with pytest.raises(ValueError, match="negative"):
        sl.save_saelens(neg, tmp_path / "neg")
    stacked = jax.tree_util.tree_map(lambda a: np.stack([a, a]), jr)
    with pytest.raises(ValueError, match="unstack"):
        sl.save_saelens(stacked, tmp_path / "st")
    with pytest.raises(ValueError, match="`dtype`"):
        sl.save_saelens(jr, tmp_path / "dt", dtype="int8")
    with pytest.raises(TypeError, match="`metadata`"):
        sl.save_saelens(jr, tmp_path / "md", metadata={"bad": object()})
    assert not (tmp_path / "md" / "cfg.json").exists()
