"""Linear probes on a frozen encoder: the evaluation-mode probe is the head on fixed features, the
training-mode probe (the authors' code for an encoder loaded from its checkpoint) never moves the
encoder's weights but refreshes its BatchNorm averages from the probe's minibatches, and the two
agree where training and evaluation mode compute the same thing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp.datasets.shapes import make_shapes
from jaxinterp.midrange.lenet import LeNet, LinearHead
from jaxinterp.midrange.probe import FrozenEncoderHead, head_accuracy, probe_accuracy
from jaxinterp.midrange.training import train_epochs

SMALL = dict(channels=(4, 6), dense=(12,), feat_size=10)  # a LeNet small enough for 20-pixel images in tests


@pytest.fixture(scope="module")
def shapes():
    train = make_shapes(180, bias_fraction=0.0, seed=3, size=20)
    test = make_shapes(90, bias_fraction=0.0, seed=4, size=20)
    return train, test


@pytest.fixture(scope="module")
def trained(shapes):
    """A small LeNet with dropout 0.2 and BatchNorms, trained 3 epochs, and its variables."""
    model = LeNet(dropout=0.2, **SMALL)
    return model, train_epochs(model, shapes[0].x, shapes[0].y, key=jax.random.key(0), epochs=3, batch_size=60)[0]


def _initial(model):
    return model.init(jax.random.key(2), jnp.zeros((1, 20, 20, 1)))


def test_eval_mode_is_the_head_on_evaluation_features(shapes, trained):
    train, test = shapes
    model, v = trained
    feats = [np.asarray(model.apply(v, jnp.asarray(d.x), return_features=True)[1]) for d in (train, test)]
    settings = dict(epochs=4, batch_size=60, dropout=0.2)
    k = jax.random.key(7)
    ours = probe_accuracy(model, v, train.x, train.y, test.x, test.y, key=k, encoder_mode="eval", **settings)
    assert ours == head_accuracy(feats[0], train.y, feats[1], test.y, key=k, **settings)


def test_train_mode_equals_eval_mode_where_the_encoder_has_no_dropout_or_batch_norm(shapes, key):
    """Without dropout and BatchNorm the encoder computes the same features in both modes, so the
    two probes (same head initialisation, minibatches and dropout keys) classify alike."""
    train, test = shapes
    model = LeNet(batch_norm=False, dropout=0.0, **SMALL)
    v = _initial(model)
    k = jax.random.key(8)
    accs = [probe_accuracy(model, v, train.x, train.y, test.x, test.y, key=k, encoder_mode=mode, epochs=5,
                           batch_size=60) for mode in ("eval", "train")]
    assert abs(accs[0] - accs[1]) <= 1 / len(test.y)  # float rounding may flip one borderline input at most


def test_train_mode_keeps_the_weights_and_refreshes_the_running_averages(shapes, key):
    """One full-batch step: the encoder's weights are bit-identical afterwards, its running means
    are 0.9 * old + 0.1 * the training-mode batch means of the whole set (as PyTorch's momentum
    0.1 updates them under ``no_grad``), and the head moved."""
    train, _ = shapes
    enc = LeNet(dropout=0.0, **SMALL)
    v = _initial(enc)
    head = LinearHead(3)
    model = FrozenEncoderHead(enc, head, encoder_train=True)
    start = {"params": {"encoder": v["params"], "head": head.init(key, jnp.zeros((1, 10)))["params"]},
             "batch_stats": {"encoder": v["batch_stats"]}}
    after, _ = train_epochs(model, train.x, train.y, key=jax.random.key(1), epochs=1, batch_size=len(train.y),
                            variables=start)
    jax.tree.map(np.testing.assert_array_equal, after["params"]["encoder"], v["params"])
    assert not np.allclose(after["params"]["head"]["Dense_0"]["kernel"], start["params"]["head"]["Dense_0"]["kernel"])
    _, upd = enc.apply(v, jnp.asarray(train.x), train=True, mutable=["batch_stats"])  # the same full batch
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 after["batch_stats"]["encoder"], upd["batch_stats"])
    first = np.asarray(after["batch_stats"]["encoder"]["BatchNorm_0"]["mean"])
    assert not np.allclose(first, v["batch_stats"]["BatchNorm_0"]["mean"])


def test_train_mode_with_dropout_is_reproducible_from_its_key(shapes, trained):
    train, test = shapes
    model, v = trained
    runs = [probe_accuracy(model, v, train.x, train.y, test.x, test.y, key=jax.random.key(k), encoder_mode="train",
                           epochs=2, batch_size=60, dropout=0.2) for k in (9, 9)]
    assert runs[0] == runs[1]


def test_rejects_bad_arguments(shapes, key):
    train, test = shapes
    model = LeNet(**SMALL)
    v = model.init(key, jnp.zeros((1, 20, 20, 1)))
    call = dict(key=key, epochs=1, batch_size=60)
    with pytest.raises(ValueError, match="encoder_mode"):
        probe_accuracy(model, v, train.x, train.y, test.x, test.y, encoder_mode="frozen", **call)
    with pytest.raises(ValueError, match="standardize"):
        probe_accuracy(model, v, train.x, train.y, test.x, test.y, encoder_mode="train", standardize=True, **call)
    with pytest.raises(TypeError, match="x_train"):
        probe_accuracy(model, v, train.x.astype(np.int32), train.y, test.x, test.y, **call)
    with pytest.raises(ValueError, match="y_test"):
        probe_accuracy(model, v, train.x, train.y, test.x, test.y[:-1], **call)
    with pytest.raises(TypeError, match="encoder_variables"):
        probe_accuracy(model, v["params"], train.x, train.y, test.x, test.y, **call)
    with pytest.raises(TypeError, match="encoder"):
        probe_accuracy(lambda x: x, v, train.x, train.y, test.x, test.y, **call)
    with pytest.raises(ValueError, match="f_train"):
        head_accuracy(np.zeros((6, 3)), np.arange(6) % 3, np.zeros((4, 2)), np.arange(4) % 3, key=key)
    with pytest.raises(ValueError, match="f_train"):
        head_accuracy(np.full((6, 3), np.nan), np.arange(6) % 3, np.zeros((4, 3)), np.arange(4) % 3, key=key)
    with pytest.raises(ValueError, match="dropout"):
        head_accuracy(np.zeros((6, 3)), np.arange(6) % 3, np.zeros((4, 3)), np.arange(4) % 3, key=key, dropout=1.0)


def test_train_mode_needs_an_encoder_with_a_training_mode(shapes, key):
    from jaxinterp.models import CNN

    train, test = shapes
    cnn = CNN(channels=(4,), hidden=8, n_classes=3)
    v = cnn.init(key, jnp.zeros((1, 20, 20, 1)))
    with pytest.raises(ValueError, match="training mode"):
        probe_accuracy(cnn, v, train.x, train.y, test.x, test.y, key=key, encoder_mode="train", epochs=1)
    acc = probe_accuracy(cnn, v, train.x, train.y, test.x, test.y, key=key, encoder_mode="eval", epochs=1,
                         standardize=True)
    assert 0.0 <= acc <= 1.0
