"""Export and import sparse autoencoders in SAELens's on-disk format.

A SAELens SAE is a folder with two files:

- ``sae_weights.safetensors``: ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_in]``,
  ``b_dec [d_in]``, and ``threshold [d_sae]`` for the ``jumprelu`` architecture.
- ``cfg.json``: ``architecture`` (``"standard"``, ``"topk"`` or ``"jumprelu"``), ``d_in``,
  ``d_sae``, ``dtype``, ``device``, ``apply_b_dec_to_input``, ``normalize_activations``,
  ``reshape_activations``, ``k`` (and ``rescale_acts_by_decoder_norm``) for ``topk``, and a
  ``metadata`` dict (``hook_name``, ``model_name``, ``sae_lens_version``, ...).

SAELens computes (``sae_lens/saes/*.py``, version 6)::

    pre   = (x - b_dec * apply_b_dec_to_input) @ W_enc + b_enc
    f     = relu(pre)                          # standard
          = relu of the k largest of pre       # topk
          = relu(pre) * 1[pre > threshold]     # jumprelu
    x_hat = f @ W_dec + b_dec

and a ``Directions`` computes ``pre = ((x - center) / scale) @ weight + bias`` and
``x_hat = (f @ components) * scale + center``. The per-feature normalisation folds exactly into
the weights (``W_enc = weight / scale[:, None]``, ``W_dec = components * scale``,
``b_dec = center``), so an export needs no normalisation setting and the latent activations are
unchanged. BatchTopK SAEs are written as ``jumprelu`` with their single inference threshold
repeated for every latent (SAELens does the same). What the format cannot hold is refused with
an error naming it: encoders other than ReLU/TopK/JumpReLU/BatchTopK, negative JumpReLU
thresholds (SAELens applies a ReLU before the threshold), and on import the per-input
normalisations ``constant_norm_rescale`` and ``layer_norm``.

The weights are written with the ``safetensors`` package (its numpy API) when it is installed,
and otherwise by a small reader/writer of the format in this module: an 8-byte little-endian
header length ``N``, ``N`` bytes of JSON (``{name: {"dtype", "shape", "data_offsets"}}``, plus an
optional ``"__metadata__"`` map of strings), then the raw little-endian tensor bytes.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import ml_dtypes
import numpy as np

from jaxinterp.directions.base import Directions
from jaxinterp.directions.encoders import BatchTopK, JumpReLU, ReLU, TopK

__all__ = ["save_saelens", "load_saelens", "saelens_config", "save_safetensors", "load_safetensors",
           "WEIGHTS_FILENAME", "CONFIG_FILENAME"]

WEIGHTS_FILENAME = "sae_weights.safetensors"
CONFIG_FILENAME = "cfg.json"
FORMAT_VERSION = "6.0.0"  # the SAELens major version whose layout is written (metadata.sae_lens_version)

_ST_DTYPES = {"F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
              "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype("<i8"), "I32": np.dtype("<i4"),
              "I16": np.dtype("<i2"), "I8": np.dtype("i1"), "U8": np.dtype("u1"), "BOOL": np.dtype("?")}
_SAVE_DTYPES = {"float32": np.float32, "float64": np.float64, "float16": np.float16,
                "bfloat16": ml_dtypes.bfloat16}
_ARCHITECTURES = ("standard", "topk", "jumprelu")


# ---------------------------------------------------------------- safetensors


def _st_name(dtype: np.dtype) -> str:
    dtype = np.dtype(dtype)
    little = dtype.newbyteorder("<") if dtype.kind in "fiub" else dtype
    for name, dt in _ST_DTYPES.items():
        if little == dt:
            return name
    raise TypeError(f"safetensors cannot store dtype {np.dtype(dtype)}; expected one of {sorted(_ST_DTYPES)}.")


def _encode_safetensors(tensors: dict[str, np.ndarray], metadata: dict[str, str] | None) -> bytes:
    """The bytes of a safetensors file holding ``tensors`` (in name order, header padded to 8 bytes)."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs, offset = [], 0
    for name in sorted(tensors):
        arr = np.asarray(tensors[name])
        dtype = _st_name(arr.dtype)
        data = np.ascontiguousarray(arr.astype(_ST_DTYPES[dtype], copy=False)).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def _start_offset(item) -> int:
    """Sort key of a header entry: its first data offset (-1 when malformed; the entry is rejected later)."""
    try:
        return int(item[1]["data_offsets"][0])
    except (KeyError, TypeError, IndexError, ValueError):
        return -1


def _decode_safetensors(raw: bytes, path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Tensors and metadata of the safetensors bytes ``raw``; errors name ``path``."""
    if len(raw) < 8:
        raise ValueError(f"{path}: not a safetensors file (shorter than its 8-byte header length).")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > len(raw) - 8:
        raise ValueError(f"{path}: header length {n} exceeds the file size {len(raw)}.")
    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: the safetensors header is not valid JSON ({err}).") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the safetensors header must be a JSON object.")
    metadata = header.pop("__metadata__", None) or {}
    buffer, out, end = memoryview(raw)[8 + n:], {}, 0
    for name, spec in sorted(header.items(), key=_start_offset):
        try:
            dtype, shape, (lo, hi) = _ST_DTYPES[spec["dtype"]], tuple(map(int, spec["shape"])), spec["data_offsets"]
            lo, hi = int(lo), int(hi)
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: tensor {name!r} has a bad header entry {spec!r} (expected dtype in "
                             f"{sorted(_ST_DTYPES)}, shape and data_offsets).") from None
        if lo != end or hi > len(buffer) or hi - lo != int(np.prod(shape)) * dtype.itemsize:
            raise ValueError(f"{path}: tensor {name!r} has data_offsets {[lo, hi]} that do not match its "
                             f"dtype {spec['dtype']} and shape {list(shape)} (or overlap/leave gaps).")
        out[name] = np.frombuffer(buffer[lo:hi], dtype=dtype).reshape(shape).copy()
        end = hi
    if end != len(buffer):
        raise ValueError(f"{path}: {len(buffer) - end} trailing bytes after the last tensor.")
    return out, dict(metadata)


def save_safetensors(tensors: dict[str, Any], path: str | os.PathLike, *, metadata: dict[str, str] | None = None,
                     backend: str = "auto") -> Path:
    """Write arrays to a safetensors file, atomically (a temporary file renamed into place).

    Args:
      tensors: name -> array (numpy or jax), any shape.
      path: the file to write.
      metadata: optional string -> string map stored in the header's ``__metadata__``.
      backend: ``"safetensors"`` (the package's numpy API), ``"builtin"`` (this module's writer)
        or ``"auto"`` (the package when installed).

    Returns:
      The path written.
    """
    arrays = {str(k): np.asarray(v) for k, v in tensors.items()}
    path = Path(path)
    if _backend(backend) == "safetensors":
        from safetensors.numpy import save
        data = save({k: np.ascontiguousarray(v) for k, v in arrays.items()}, metadata=metadata)
    else:
        data = _encode_safetensors(arrays, metadata)
    _atomic_write(path, data)
    return path


def load_safetensors(path: str | os.PathLike, *, backend: str = "auto") -> dict[str, np.ndarray]:
    """Read every tensor of a safetensors file.

    Args:
      path: the file.
      backend: as in ``save_safetensors``.

    Returns:
      name -> numpy array.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"safetensors file not found: {path}")
    raw = path.read_bytes()
    if _backend(backend) == "safetensors":
        from safetensors import SafetensorError
        from safetensors.numpy import load
        try:
            return dict(load(raw))
        except (SafetensorError, TypeError, KeyError) as err:  # KeyError: a dtype numpy lacks (BF16)
            if backend == "safetensors":
                raise ValueError(f"{path}: the safetensors package cannot read it ({err!r}).") from None
    return _decode_safetensors(raw, str(path))[0]


def _backend(backend: str) -> str:
    if backend not in ("auto", "safetensors", "builtin"):
        raise ValueError(f"`backend` must be 'auto', 'safetensors' or 'builtin'; got {backend!r}.")
    if backend == "builtin":
        return backend
    try:
        import safetensors.numpy  # noqa: F401
    except ImportError:
        if backend == "safetensors":
            raise ImportError("backend='safetensors' needs the `safetensors` package (pip install safetensors).")
        return "builtin"
    return "safetensors"


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------- export


def _export_weights(directions: Directions) -> tuple[str, dict[str, np.ndarray], dict[str, Any]]:
    """SAELens architecture, tensors (float64) and architecture fields of an SAE ``Directions``."""
    enc = directions.encoder
    kinds = {ReLU: "standard", TopK: "topk", JumpReLU: "jumprelu", BatchTopK: "jumprelu"}
    if type(enc) not in kinds:
        raise TypeError(f"`directions`: SAELens has no architecture for a {type(enc).__name__} encoder; only "
                        f"ReLU, TopK, JumpReLU and BatchTopK sparse autoencoders can be exported.")
    if np.ndim(directions.components) != 2:
        raise ValueError(f"`directions` must hold one SAE, components [d_sae, d_in]; got shape "
                         f"{np.shape(directions.components)} (split a stacked sweep with `unstack`).")
    f64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
    scale, center = f64(directions.scale), f64(directions.center)
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise ValueError("`directions.scale` must be finite and positive to fold into W_enc/W_dec.")
    weights = {"W_enc": f64(enc.weight) / scale[:, None], "b_enc": f64(enc.bias),
               "W_dec": f64(directions.components) * scale[None, :], "b_dec": center}
    fields: dict[str, Any] = {}
    if isinstance(enc, TopK):
        fields = {"k": int(enc.k), "rescale_acts_by_decoder_norm": False}
    elif isinstance(enc, (JumpReLU, BatchTopK)):
        thr = np.broadcast_to(f64(enc.threshold), weights["b_enc"].shape).copy()
        if np.any(thr < 0):
            raise ValueError(f"`directions.encoder.threshold` has {int(np.sum(thr < 0))} negative entries; SAELens's "
                             "jumprelu applies relu(pre) * 1[pre > threshold] and cannot represent them.")
        weights["threshold"] = thr
    for name, w in weights.items():
        if not np.all(np.isfinite(w)):
            raise ValueError(f"`directions`: the exported tensor {name} has non-finite entries.")
    return kinds[type(enc)], weights, fields


def save_saelens(directions: Directions, folder: str | os.PathLike, *, hook_name: str | None = None,
                 model_name: str | None = None, hook_head_index: int | None = None, dtype: str | None = None,
                 device: str = "cpu", metadata: dict[str, Any] | None = None, backend: str = "auto") -> Path:
    """Write a ReLU, TopK, JumpReLU or BatchTopK SAE as a SAELens folder (``SAE.load_from_disk`` reads it).

    The input normalisation of ``directions`` is folded into the weights (exact, see the module
    docstring), so ``cfg.json`` says ``normalize_activations: "none"`` and the latent
    activations SAELens computes equal ``directions.encode(x)``. BatchTopK is written as
    ``jumprelu`` with its threshold repeated for every latent.

    Args:
      directions: an SAE ``Directions`` (``sae(...)`` fitted by ``fit``), components
        ``[d_sae, d_in]``.
      folder: the folder to write (created if needed; its two files are replaced atomically).
      hook_name: where the SAE reads activations (``metadata.hook_name``), e.g. a capture name.
      model_name: the model (``metadata.model_name``).
      hook_head_index: ``metadata.hook_head_index``.
      dtype: stored dtype, ``"float32"``, ``"float64"``, ``"float16"`` or ``"bfloat16"``; the
        dtype of ``directions.components`` by default.
      device: ``cfg.json`` ``device`` (SAELens's loader moves the tensors there).
      metadata: more JSON-serialisable ``metadata`` entries.
      backend: safetensors writer, as in ``save_safetensors``.

    Returns:
      The folder.
    """
    architecture, weights, fields = _export_weights(directions)
    dtype = str(np.dtype(directions.components.dtype)) if dtype is None else dtype
    if dtype not in _SAVE_DTYPES:
        raise ValueError(f"`dtype` must be one of {sorted(_SAVE_DTYPES)}; got {dtype!r}.")
    if not isinstance(device, str):
        raise TypeError(f"`device` must be a str such as 'cpu' or 'cuda'; got {type(device).__name__}.")
    meta = {"sae_lens_version": FORMAT_VERSION, "sae_lens_training_version": FORMAT_VERSION,
            "hook_name": hook_name, "hook_head_index": hook_head_index, "model_name": model_name,
            "exported_from": f"jaxinterp {directions.method}"}
    meta.update(dict(metadata or {}))
    d_sae, d_in = weights["W_dec"].shape
    cfg = {"architecture": architecture, "d_in": int(d_in), "d_sae": int(d_sae), "dtype": dtype, "device": device,
           "apply_b_dec_to_input": True, "normalize_activations": "none",
           "reshape_activations": "none",
           **fields, "metadata": meta}
    try:
        text = json.dumps(cfg, indent=2)
    except TypeError as err:
        raise TypeError(f"`metadata` must be JSON-serialisable ({err}).") from None
    folder = Path(folder)
    tensors = {k: v.astype(_SAVE_DTYPES[dtype]) for k, v in weights.items()}
    save_safetensors(tensors, folder / WEIGHTS_FILENAME, backend=backend)
    _atomic_write(folder / CONFIG_FILENAME, text.encode("utf-8"))
    return folder


# ---------------------------------------------------------------- import


def saelens_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``cfg.json`` of a SAELens folder, with pre-6.0 field names brought up to date.

    Older configs name ``hook_point`` (now ``metadata.hook_name``), give TopK as
    ``activation_fn: "topk"`` with ``activation_fn_kwargs.k``, omit ``architecture``
    (``"standard"``) and store ``normalize_activations`` as a bool; these are translated as
    SAELens's ``handle_pre_6_0_config`` does.

    Args:
      folder: the SAE folder.

    Returns:
      The config dict; ``metadata`` is always a dict.
    """
    path = Path(folder) / CONFIG_FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"SAELens config not found: {path} (a SAELens SAE folder holds "
                                f"{CONFIG_FILENAME} and {WEIGHTS_FILENAME}).")
    try:
        cfg = json.loads(path.read_text("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err}).") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: must hold a JSON object; got {type(cfg).__name__}.")
    meta = cfg.get("metadata")
    cfg["metadata"] = dict(meta) if isinstance(meta, dict) else {}
    for old, new in (("hook_point", "hook_name"), ("hook_point_head_index", "hook_head_index"),
                     ("model_name", "model_name"), ("hook_name", "hook_name")):
        if old in cfg:
            cfg["metadata"].setdefault(new, cfg[old])
    if "architecture" not in cfg:
        kwargs = cfg.get("activation_fn_kwargs") or {}
        topk = cfg.get("activation_fn", cfg.get("activation_fn_str")) == "topk" and kwargs.get("k") is not None
        cfg["architecture"] = "topk" if topk else "standard"
        if topk:
            cfg.setdefault("k", kwargs["k"])
    if isinstance(cfg.get("normalize_activations"), bool) or cfg.get("normalize_activations") is None:
        cfg["normalize_activations"] = "expected_average_only_in" if cfg.get("normalize_activations") else "none"
    return cfg


def _cfg_int(cfg: dict, name: str, path: Path, *, minimum: int = 1) -> int:
    value = cfg.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{path}: field {name!r} must be an int >= {minimum}; got {value!r}.")
    return value


def _read_tensors(folder: Path, architecture: str, d_in: int, d_sae: int, backend: str) -> dict[str, np.ndarray]:
    """The SAE tensors as float64, shapes checked against ``cfg.json``."""
    path = folder / WEIGHTS_FILENAME
    tensors = load_safetensors(path, backend=backend)
    shapes = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    if architecture == "jumprelu":
        shapes["threshold"] = (d_sae,)
    for name in ("scaling_factor", "finetuning_scaling_factor"):
        if name in tensors:
            if not np.allclose(np.asarray(tensors[name], np.float64), 1.0):
                raise ValueError(f"{path}: tensor {name!r} is not all ones; the fine-tuning scaling factor "
                                 "of old SAELens SAEs is not supported.")
            del tensors[name]
    missing = [n for n in shapes if n not in tensors]
    if missing:
        raise ValueError(f"{path}: missing tensor(s) {missing} for architecture {architecture!r}; "
                         f"found {sorted(tensors)}.")
    extra = sorted(set(tensors) - set(shapes))
    if extra:
        raise ValueError(f"{path}: unexpected tensor(s) {extra} for architecture {architecture!r} (a training "
                         "checkpoint rather than an inference SAE?).")
    out = {}
    for name, shape in shapes.items():
        arr = np.asarray(tensors[name], np.float64)
        if arr.shape != shape:
            raise ValueError(f"{path}: tensor {name!r} has shape {arr.shape}; cfg.json (d_in={d_in}, "
                             f"d_sae={d_sae}) needs {shape}.")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{path}: tensor {name!r} has non-finite entries.")
        out[name] = arr
    return out


def _fold_config(w: dict[str, np.ndarray], cfg: dict, path: Path, norm_scaling_factor) -> dict[str, np.ndarray]:
    """Fold SAELens's input normalisation, decoder-norm rescaling and b_dec convention into the weights."""
    norm = cfg.get("normalize_activations", "none")
    if norm in ("constant_norm_rescale", "layer_norm"):
        raise ValueError(f"{path}: normalize_activations={norm!r} rescales each input by its own norm/statistics, "
                         "which a Directions (a fixed affine normalisation) cannot represent.")
    if norm == "expected_average_only_in":
        sf = cfg.get("norm_scaling_factor") if norm_scaling_factor is None else norm_scaling_factor
        if sf is None:
            raise ValueError(f"{path}: normalize_activations='expected_average_only_in' needs the dataset scaling "
                             "factor, which cfg.json does not hold; pass `norm_scaling_factor=` (1.0 reproduces "
                             "SAELens's load_from_disk, which ignores it).")
        sf = float(sf)
        if not np.isfinite(sf) or sf <= 0:
            raise ValueError(f"`norm_scaling_factor` must be a finite positive number; got {sf!r}.")
        w = dict(w, W_enc=w["W_enc"] * sf, W_dec=w["W_dec"] / sf, b_dec=w["b_dec"] / sf)
    elif norm != "none":
        raise ValueError(f"{path}: field 'normalize_activations' must be one of 'none', 'expected_average_only_in', "
                         f"'constant_norm_rescale', 'layer_norm'; got {norm!r}.")
    if cfg["architecture"] == "topk" and cfg.get("rescale_acts_by_decoder_norm", False):
        n = np.linalg.norm(w["W_dec"], axis=1)
        if np.any(n == 0):
            raise ValueError(f"{path}: rescale_acts_by_decoder_norm with {int(np.sum(n == 0))} zero decoder rows.")
        w = dict(w, W_enc=w["W_enc"] * n, b_enc=w["b_enc"] * n, W_dec=w["W_dec"] / n[:, None])
    apply_b_dec = cfg.get("apply_b_dec_to_input", True)
    if not isinstance(apply_b_dec, bool):
        raise ValueError(f"{path}: field 'apply_b_dec_to_input' must be a bool; got {apply_b_dec!r}.")
    if not apply_b_dec:  # pre = x @ W_enc + b_enc = (x - b_dec) @ W_enc + (b_enc + b_dec @ W_enc)
        w = dict(w, b_enc=w["b_enc"] + w["b_dec"] @ w["W_enc"])
    return w


def load_saelens(folder: str | os.PathLike, *, norm_scaling_factor: float | None = None,
                 dtype: str = "float32", backend: str = "auto") -> Directions:
    """Read a SAELens SAE folder (``standard``, ``topk`` or ``jumprelu``) as a ``Directions``.

    ``encode(x)`` equals SAELens's ``SAE.encode(x)`` and ``reconstruct(x)`` its ``forward(x)``
    (see the module docstring): ``center = b_dec``, ``scale = 1``, ``components = W_dec`` and
    the encoder holds ``W_enc``, ``b_enc`` (and ``threshold``). SAELens's ``jumprelu`` applies
    ``relu`` before the threshold, so negative thresholds are read as 0 (the same function).
    A ``jumprelu`` written by ``save_saelens`` from a BatchTopK SAE comes back as ``BatchTopK``.

    Args:
      folder: the folder holding ``cfg.json`` and ``sae_weights.safetensors``.
      norm_scaling_factor: for ``normalize_activations: "expected_average_only_in"``, the factor
        SAELens multiplies inputs by (folded into the weights as SAELens's
        ``fold_activation_norm_scaling_factor`` does); read from ``cfg.json`` when it holds one.
      dtype: dtype of the returned arrays (``"float32"`` or ``"float64"``).
      backend: safetensors reader, as in ``load_safetensors``.

    Returns:
      ``Directions`` with components ``[d_sae, d_in]``, method ``sae_relu``, ``sae_topk``,
      ``sae_jumprelu`` or ``sae_batchtopk``.
    """
    if dtype not in ("float32", "float64"):
        raise ValueError(f"`dtype` must be 'float32' or 'float64'; got {dtype!r}.")
    folder = Path(folder)
    cfg = saelens_config(folder)
    path = folder / CONFIG_FILENAME
    arch = cfg["architecture"]
    if arch not in _ARCHITECTURES:
        raise ValueError(f"{path}: field 'architecture' is {arch!r}; supported SAELens architectures are "
                         f"{list(_ARCHITECTURES)} (gated, transcoder and training-only ones are not).")
    d_in, d_sae = _cfg_int(cfg, "d_in", path), _cfg_int(cfg, "d_sae", path)
    w = _fold_config(_read_tensors(folder, arch, d_in, d_sae, backend), cfg, path, norm_scaling_factor)
    cast = lambda a: jnp.asarray(np.asarray(a, dtype))  # noqa: E731
    args = (cast(w["W_enc"]), cast(w["b_enc"]))
    method = {"standard": "sae_relu", "topk": "sae_topk", "jumprelu": "sae_jumprelu"}[arch]
    if arch == "standard":
        encoder = ReLU(*args)
    elif arch == "topk":
        encoder = TopK(*args, k=_cfg_int(cfg, "k", path, minimum=1))
        if encoder.k > d_sae:
            raise ValueError(f"{path}: field 'k' ({encoder.k}) exceeds d_sae ({d_sae}).")
    else:
        thr = np.maximum(w["threshold"], 0.0)
        if cfg["metadata"].get("exported_from") == "jaxinterp sae_batchtopk" and np.all(thr == thr[0]):
            encoder, method = BatchTopK(*args, threshold=cast(thr[0])), "sae_batchtopk"
        else:
            encoder = JumpReLU(*args, threshold=cast(thr))
    return Directions.create(cast(w["W_dec"]), encoder, method=method, center=cast(w["b_dec"]),
                             scale=cast(np.ones(d_in)))
