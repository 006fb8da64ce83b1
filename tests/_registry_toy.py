"""Bad-input battery registrations: toy models, classifiers, the datasets digits / mnist1d / sparse,
and checkpoints.

``entries()`` registers every public function of the area once with a valid call; ``EXEMPT``
names the public callables that take no user data, with the reason.
"""

import os
import tempfile

import jax
import numpy as np

from _battery import Entry
from _battery_inputs import *  # noqa: F403 - the shared battery inputs

EXEMPT: dict[str, str] = {}

SEED_ZERO = "0 is a valid seed"
TW = np.abs(X[:4, :6]) * 0.5                                          # toy weights W [n=4, m=6]
TX = np.eye(4, dtype=np.float32)                                      # toy inputs (the basis) [4, 4]
TM = np.array([4.0, 8.0, 16.0])                                       # hidden sizes [3]
TC = np.array([4.0, 2.1, 0.9])                                        # mean counts [3]
TT = np.linspace(0.0, 10.0, 5)                                        # times [5]
STACK = "a rank-3 `w` is a stack of instances [instances, n, m] (documented)"
SCALAR_T = "a scalar time gives the scalar closed form (documented: `t` is [] or [k])"
CONFIG_ONLY = dict(kinds={"config": "other"})


def _tiny_config(**kw):
    from jaxinterp import toy
    return toy.IncidentalConfig(n_features=4, n_hidden=4, steps=10, **kw)


def _toy_entries():
    from jaxinterp import toy
    cfg = _tiny_config()
    return [
        Entry("jaxinterp.toy.IncidentalConfig",
              lambda learning_rate, l1, weight_decay, n_features: toy.IncidentalConfig(
                  n_features=n_features, n_hidden=8, learning_rate=learning_rate, l1=l1, weight_decay=weight_decay),
              dict(learning_rate=1e-3, l1=1e-3, weight_decay=0.01, n_features=8),
              accept={"l1.zero": "no L1 penalty is a valid setting"}),
        Entry("jaxinterp.toy.collisions_sweep",
              lambda key, n_seeds, hidden_sizes: toy.collisions_sweep(key, _tiny_config(), hidden_sizes,
                                                                     n_seeds)["counts"],
              dict(key=KEY, n_seeds=2, hidden_sizes=np.array([4, 8])), kinds={"hidden_sizes": "labels"}),
        Entry("jaxinterp.toy.count_polysemantic", lambda w: toy.count_polysemantic(w), dict(w=TW),
              accept={"w.huge": "huge weights represent no feature: a count of 0 is the answer", "w.rank_up": STACK}),
        Entry("jaxinterp.toy.represents", lambda w: toy.represents(w), dict(w=TW),
              accept={"w.huge": "huge weights represent no feature (documented band)", "w.rank_up": STACK}),
        Entry("jaxinterp.toy.fourth_norm", lambda w: toy.fourth_norm(w), dict(w=TW), accept={"w.rank_up": STACK}),
        Entry("jaxinterp.toy.forward", lambda w, x: toy.forward(w, x), dict(w=TW, x=TX), pairs=()),
        Entry("jaxinterp.toy.loss", lambda w, x, l1: toy.loss(w, x, l1), dict(w=TW, x=TX, l1=1e-3),
              accept={"l1.zero": "no L1 penalty is a valid setting"}),
        Entry("jaxinterp.toy.basis_loss_and_grad", lambda w, l1: toy.basis_loss_and_grad(w, l1),
              dict(w=TW, l1=1e-3)),
        Entry("jaxinterp.toy.init_weights", lambda key, config: toy.init_weights(key, config),
              dict(key=KEY, config=cfg), **CONFIG_ONLY),
        Entry("jaxinterp.toy.make_init", lambda config, key: toy.make_init(config)(key, None),
              dict(config=cfg, key=KEY), **CONFIG_ONLY),
        Entry("jaxinterp.toy.make_loss_and_grad",
              lambda config, w: toy.make_loss_and_grad(config)(w, KEY, None), dict(config=cfg, w=TW[:, :4]),
              **CONFIG_ONLY),
        Entry("jaxinterp.toy.make_optimizer", lambda config: toy.make_optimizer(config).init(TW),
              dict(config=cfg), **CONFIG_ONLY),
        Entry("jaxinterp.toy.fit",
              lambda keys, steps, chunk_size: toy.fit(toy.make_init(cfg), toy.make_loss_and_grad(cfg),
                                                      toy.make_optimizer(cfg), keys, steps=steps,
                                                      chunk_size=chunk_size).state.params,
              dict(keys=jax.random.split(KEY, 2), steps=4, chunk_size=2)),
        Entry("jaxinterp.toy.theory_count", lambda n_features, n_hidden: toy.theory_count(n_features, n_hidden),
              dict(n_features=8, n_hidden=4),
              accept={"n_hidden.fraction": "the closed form is continuous in m (figures draw it on a grid; documented)"}),
        Entry("jaxinterp.toy.loglog_slope", lambda m, counts: toy.loglog_slope(m, counts), dict(m=TM, counts=TC),
              pairs=(("m", "counts"),)),
        Entry("jaxinterp.toy.predicted_active", lambda t, n_hidden, l1: toy.predicted_active(t, n_hidden, l1),
              dict(t=TT, n_hidden=16, l1=0.1), accept={"t.rank_down": SCALAR_T}),
        Entry("jaxinterp.toy.predicted_l1_norm", lambda t, n_hidden, l1: toy.predicted_l1_norm(t, n_hidden, l1),
              dict(t=TT, n_hidden=16, l1=0.1), accept={"t.rank_down": SCALAR_T}),
        Entry("jaxinterp.toy.simulate_sparsification",
              lambda key, n_hidden, l1, dt: toy.simulate_sparsification(key, n_hidden, l1, t_max=5.0, dt=dt).l1_norm,
              dict(key=KEY, n_hidden=8, l1=0.5, dt=0.5)),
        Entry("jaxinterp.toy.sparsification_agreement",
              lambda n_hidden, l1: toy.sparsification_agreement(
                  toy.simulate_sparsification(KEY, 8, 0.05), n_hidden, l1),
              dict(n_hidden=8, l1=0.05)),
        Entry("jaxinterp.toy.noise_experiment",
              lambda key, n_features, n_seeds, steps, learning_rate: toy.noise_experiment(
                  key, n_features=n_features, n_hidden=4, sigmas=(0.1,), kinds=("gaussian",), n_seeds=n_seeds,
                  steps=steps, learning_rate=learning_rate, record_every=5, chunk_size=10).fourth_norm,
              dict(key=KEY, n_features=4, n_seeds=1, steps=10, learning_rate=0.02)),
        Entry("jaxinterp.toy.winner_agreement", lambda w_init, w_final: toy.winner_agreement(w_init, w_final),
              dict(w_init=TW, w_final=TW[:, ::-1].copy()), pairs=(("w_init", "w_final"),),
              accept={"w_init.huge": "winners are argmaxes: scale does not change them",
                      "w_final.huge": "winners are argmaxes: scale does not change them"}),
    ]


def _data_entries():
    from jaxinterp.datasets import load_digits, load_mnist1d, make_superposition_data, sparse_features
    return [
        Entry("jaxinterp.datasets.load_digits", lambda seed, test_fraction: load_digits(seed, test_fraction).x_test,
              dict(seed=0, test_fraction=0.25), accept={"seed.zero": SEED_ZERO}),
        Entry("jaxinterp.datasets.load_mnist1d", lambda seed, num_samples: load_mnist1d(seed, num_samples).x_test,
              dict(seed=0, num_samples=100), accept={"seed.zero": SEED_ZERO}),
        Entry("jaxinterp.datasets.sparse_features",
              lambda key_or_seed, n_samples, n_features, feature_probability: sparse_features(
                  key_or_seed, n_samples, n_features, feature_probability),
              dict(key_or_seed=KEY, n_samples=16, n_features=4, feature_probability=0.1),
              accept={"key_or_seed.int": "an int seed is documented as valid"}),
        Entry("jaxinterp.datasets.make_superposition_data",
              lambda key_or_seed, n_samples, n_features, dim, feature_probability: make_superposition_data(
                  key_or_seed, n_samples, n_features, dim, feature_probability),
              dict(key_or_seed=KEY, n_samples=16, n_features=4, dim=2, feature_probability=0.1),
              accept={"key_or_seed.int": "an int seed is documented as valid"}),
    ]


def _model_entries():
    from jaxinterp import models
    mlp = models.MLP(hidden=(8,), n_classes=3)
    xs, ys = X[:16], LABELS[:16] % 3
    return [
        Entry("jaxinterp.models.MLP", lambda n_classes: models.MLP(hidden=(8,), n_classes=n_classes).n_classes,
              dict(n_classes=3)),
        Entry("jaxinterp.models.CNN",
              lambda n_classes, kernel_size, hidden: models.CNN(channels=(2,), kernel_size=kernel_size, hidden=hidden,
                                                                n_classes=n_classes).n_classes,
              dict(n_classes=3, kernel_size=3, hidden=4)),
        Entry("jaxinterp.models.init_params", lambda key: models.init_params(mlp, (8,), key=key), dict(key=KEY)),
        Entry("jaxinterp.models.train_classifier",
              lambda x, y, key, steps, batch_size, learning_rate: models.train_classifier(
                  mlp, x, y, key=key, steps=steps, batch_size=batch_size, learning_rate=learning_rate,
                  chunk=5)[1].loss,
              dict(x=xs, y=ys, key=KEY, steps=5, batch_size=8, learning_rate=1e-3), kinds={"y": "labels"},
              pairs=(("x", "y"),)),
        Entry("jaxinterp.models.predict",
              lambda x, batch_size: models.predict(mlp, models.init_params(mlp, (8,), key=KEY), x,
                                                   batch_size=batch_size),
              dict(x=xs, batch_size=8)),
        Entry("jaxinterp.models.accuracy",
              lambda x, y: models.accuracy(mlp, models.init_params(mlp, (8,), key=KEY), x, y),
              dict(x=xs, y=ys), kinds={"y": "labels"}, pairs=(("x", "y"),)),
        Entry("jaxinterp.models.trained_classifier",
              lambda arch, dataset: models.trained_classifier(arch, dataset, steps=1).test_accuracy,
              dict(arch="mlp", dataset="digits")),
    ]


def _roundtrip(tree, fn):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "ckpt.npz")
        from jaxinterp import checkpoint
        checkpoint.save_pytree(path, {"w": TW}, metadata={"step": 1})
        return fn(path, tree)


def _checkpoint_entries():
    from jaxinterp import checkpoint
    stored = "checkpoints store any values bitwise: the saved tree is the caller's state, not input to check"
    return [
        Entry("jaxinterp.checkpoint.save_pytree",
              lambda tree: _roundtrip(tree, lambda p, t: checkpoint.save_pytree(p, t)),
              dict(tree={"w": TW}), kinds={"tree": "other"}),
        Entry("jaxinterp.checkpoint.load_pytree",
              lambda like: _roundtrip(like, lambda p, t: checkpoint.load_pytree(p, t)[0]),
              dict(like={"w": TW}), kinds={"like": "other"}),
        Entry("jaxinterp.checkpoint.read_metadata",
              lambda name: _roundtrip(name, lambda p, n: checkpoint.read_metadata(p)[n]),
              dict(name="step")),
        Entry("jaxinterp.checkpoint.exists", lambda path: checkpoint.exists(path), dict(path="missing.npz")),
        Entry("jaxinterp.checkpoint.previous_path", lambda path: str(checkpoint.previous_path(path)),
              dict(path="ckpt.npz")),
        Entry("jaxinterp.checkpoint.describe", lambda obj: checkpoint.describe(obj), dict(obj=TW),
              accept={f"obj.{v}": "describe accepts any object: it only renders it to text"
                      for v in ("nan", "inf", "rank_up", "rank_down", "empty", "none", "string", "float16",
                                "huge", "list")}),
        Entry("jaxinterp.checkpoint.fingerprint", lambda obj: checkpoint.fingerprint(obj), dict(obj=TW),
              accept={f"obj.{v}": "a fingerprint hashes any object's description"
                      for v in ("nan", "inf", "rank_up", "rank_down", "empty", "none", "string", "float16",
                                "huge", "list")}),
    ]


def entries() -> list[Entry]:
    """This area's registered entries (built on first use: it imports the library)."""
    return _toy_entries() + _data_entries() + _model_entries() + _checkpoint_entries()
