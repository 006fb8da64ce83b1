"""Bad-input battery registrations: the mid-range analysis and curation, and the shapes datasets.

``entries()`` registers every public function of the area once with a valid call; ``EXEMPT``
names the public callables that take no user data, with the reason.
"""

import functools

import numpy as np

from _battery import Entry
from _battery_inputs import *  # noqa: F403 - the shared battery inputs

EXEMPT: dict[str, str] = {
    "jaxinterp.midrange.training.takes_train": "takes a Flax module and inspects its signature: no user data",
    "jaxinterp.midrange.probe.FrozenEncoderHead": "a wrapper of two modules with no settings of its own: its "
                                                  "encoder and head validate theirs (LeNet, LinearHead)",
}

# tiny inputs of the mid-range area (the battery stays fast)
MR_VALUES = LOGITS[:, 0]                                              # one logit over 60 inputs [60]
MR_EDGES = np.array([-3.0, -1.0, 0.0, 1.0, 3.0], np.float32)          # bin edges [5]
MR_BINS = np.arange(60) % 4                                           # bin ids in [0, 4) [60]
# a categorical attribute [60] whose first entry is a category of its own: the battery's variants
# of that entry (a negative or fractional category) keep the number of categories, and with it the
# compiled table shapes
MR_ATTR = np.where(np.arange(60) == 0, 0, 1 + np.arange(60) % 2)
MR_TABLE = np.array([[5.0, 1.0, 2.0], [1.0, 6.0, 0.0], [2.0, 2.0, 7.0], [0.0, 3.0, 1.0]], np.float32)  # counts [4, 3]
MR_GROUPS = np.arange(60) % 4                                         # group ids in [0, 4) [60]
MR_SCALER = ACTS[:100, :3]                                            # scaler features [100, 3]
CATEGORICAL = "an attribute holds any categorical values (floats and negative values are categories too)"
SEED_ZERO = "0 is a valid seed"


def _midrange_entries(midrange):
    labels = dict(kinds={"labels": "labels"}, pairs=(("logits", "labels"),))
    attribute = {"attribute.fraction": CATEGORICAL, "attribute.negative": CATEGORICAL}
    return [
        Entry("jaxinterp.midrange_mask", lambda logits, labels: midrange.midrange_mask(logits, labels),
              dict(logits=LOGITS, labels=LABELS), **labels),
        Entry("jaxinterp.midrange.curate",
              lambda logits, labels, key, rest_ratio: midrange.curate(logits, labels, key=key,
                                                                     rest_ratio=rest_ratio).indices,
              dict(logits=LOGITS, labels=LABELS, key=KEY, rest_ratio=1.0), **labels),
        Entry("jaxinterp.range_analysis",
              lambda values, n_bins, n_exemplars, key: midrange.range_analysis(
                  values, n_bins=n_bins, n_exemplars=n_exemplars, key=key).counts,
              dict(values=MR_VALUES, n_bins=5, n_exemplars=3, key=KEY)),
        Entry("jaxinterp.range_analysis[edges]",
              lambda values, edges, key: midrange.range_analysis(values, n_bins=4, edges=edges, key=key).counts,
              dict(values=MR_VALUES, edges=MR_EDGES, key=KEY),
              accept={"values.huge": "values outside the given edges fall in the first or last bin (documented)",
                      "edges.none": "edges=None is the default: quantile edges from the values (documented)"}),
        Entry("jaxinterp.midrange.bin_edges", lambda values, n_bins: midrange.bin_edges(values, n_bins),
              dict(values=MR_VALUES, n_bins=5)),
        Entry("jaxinterp.midrange.assign_bins", lambda values, edges: midrange.assign_bins(values, edges),
              dict(values=MR_VALUES, edges=MR_EDGES)),
        Entry("jaxinterp.midrange.bin_exemplars",
              lambda bins, n_bins, k, key: midrange.bin_exemplars(bins, n_bins, k, key=key),
              dict(bins=MR_BINS, n_bins=4, k=3, key=KEY), kinds={"bins": "labels"}),
        Entry("jaxinterp.midrange.direction_values",
              lambda features, direction: midrange.direction_values(features, direction),
              dict(features=X, direction=X[0].copy())),
        Entry("jaxinterp.midrange.attribute_stats",
              lambda bins, attribute, n_bins: midrange.attribute_stats(bins, attribute, n_bins).table,
              dict(bins=MR_BINS, attribute=MR_ATTR, n_bins=4), kinds={"bins": "labels", "attribute": "labels"},
              pairs=(("bins", "attribute"),), accept=attribute),
        Entry("jaxinterp.midrange.unit_attribute_scores",
              lambda features, attribute, n_bins: midrange.unit_attribute_scores(features, attribute, n_bins=n_bins),
              dict(features=LOGITS, attribute=MR_ATTR, n_bins=4), kinds={"attribute": "labels"},
              pairs=(("features", "attribute"),), accept=attribute),
        Entry("jaxinterp.midrange.contingency_table",
              lambda bins, codes, n_bins, n_values: midrange.contingency_table(bins, codes, n_bins, n_values),
              dict(bins=MR_BINS, codes=MR_ATTR, n_bins=4, n_values=3), kinds={"bins": "labels", "codes": "labels"},
              pairs=(("bins", "codes"),)),
        Entry("jaxinterp.midrange.mutual_information", lambda table: midrange.mutual_information(table),
              dict(table=MR_TABLE)),
        Entry("jaxinterp.midrange.chi_square", lambda table: midrange.chi_square(table), dict(table=MR_TABLE),
              accept={"table.huge": "counts of any size: the statistic scales with the total"}),
        Entry("jaxinterp.midrange.group_metrics",
              lambda predictions, labels, groups: midrange.group_metrics(predictions, labels, groups).worst_group,
              dict(predictions=LABELS[::-1].copy(), labels=LABELS, groups=LABELS % 2),
              kinds={"predictions": "labels", "labels": "labels", "groups": "labels"},
              pairs=(("labels", "predictions"), ("labels", "groups"))),
        Entry("jaxinterp.midrange.balanced_group_indices",
              lambda groups, key: midrange.balanced_group_indices(groups, key=key),
              dict(groups=MR_GROUPS, key=KEY), kinds={"groups": "labels"}),
    ]


@functools.cache
def _fitted():
    """A last layer and a DFR layer fitted on the tiny inputs (built when first needed)."""
    from jaxinterp import midrange
    layer = midrange.fit_last_layer(LOGITS, LABELS)
    dfr = midrange.dfr_fit(MR_SCALER, LOGITS, LABELS, MR_GROUPS, key=KEY, C_options=(1.0,), n_retrains=2)
    return layer, dfr


def _retrain_entries(midrange):
    fit = dict(kinds={"labels": "labels"}, pairs=(("features", "labels"),))
    dfr_kinds = dict(kinds={"labels": "labels", "groups": "labels"},
                     pairs=(("features", "labels"), ("features", "groups")))
    return [
        Entry("jaxinterp.midrange.fit_last_layer",
              lambda features, labels, C, max_iter: midrange.fit_last_layer(features, labels, C=C,
                                                                            max_iter=max_iter)[:4],
              dict(features=LOGITS, labels=LABELS, C=1.0, max_iter=5000), **fit),
        Entry("jaxinterp.midrange.last_layer_logits",
              lambda features: midrange.last_layer_logits(_fitted()[0], features),
              dict(features=LOGITS)),
        Entry("jaxinterp.midrange.dfr_fit",
              lambda train_features, features, labels, groups, key, n_retrains: midrange.dfr_fit(
                  train_features, features, labels, groups, key=key, C_options=(1.0,), n_retrains=n_retrains)[:4],
              dict(train_features=MR_SCALER, features=LOGITS, labels=LABELS, groups=MR_GROUPS, key=KEY,
                   n_retrains=2), **dfr_kinds),
        Entry("jaxinterp.midrange.dfr_logits", lambda features: midrange.dfr_logits(_fitted()[1], features),
              dict(features=LOGITS)),
        Entry("jaxinterp.midrange.dfr_predict", lambda features: midrange.dfr_predict(_fitted()[1], features),
              dict(features=LOGITS)),
        Entry("jaxinterp.compare_methods", _compare_methods(midrange),
              dict(train_logits=LOGITS, test_features=LOGITS[::-1].copy(), test_labels=LABELS,
                   test_groups=MR_GROUPS, key=KEY, C=1.0, dfr_retrains=2),
              kinds={"test_labels": "labels", "test_groups": "labels"},
              pairs=(("test_features", "test_labels"), ("test_features", "test_groups")),
              aliases={"train_logits": ("train.logits",), "test_features": ("test.features",),
                       "test_labels": ("test.labels",), "test_groups": ("test.groups",)}),
    ]


def _compare_methods(midrange):
    """compare_methods with the splits' arrays as arguments (the battery varies each one)."""
    def call(train_logits, test_features, test_labels, test_groups, key, C, dfr_retrains):
        train = midrange.Split(LOGITS, train_logits, LABELS)
        heldout = midrange.Split(LOGITS, LOGITS, LABELS, MR_GROUPS)
        test = midrange.Split(test_features, test_features, test_labels, test_groups)
        out = midrange.compare_methods(train, heldout, test, key=key, C=C, dfr_retrains=dfr_retrains,
                                       dfr_C_options=(1.0,))
        return {name: r.metrics.per_group for name, r in out.items()}
    return call


def _shapes_entries(datasets):
    seed = {"seed.zero": SEED_ZERO}
    return [
        Entry("jaxinterp.datasets.render_shapes",
              lambda shape, x_pos, y_pos, scale, rotation, size: datasets.render_shapes(
                  shape, x_pos, y_pos, scale, rotation, size=size, supersample=1),
              dict(shape=np.array([0, 1, 2, 0]), x_pos=np.array([0.1, 0.5, 0.9, 0.3], np.float32),
                   y_pos=np.array([0.2, 0.4, 0.6, 0.8], np.float32), scale=np.array([0.6, 0.7, 0.8, 1.0], np.float32),
                   rotation=np.array([0.0, 0.3, -0.3, 0.1], np.float32), size=8),
              kinds={"shape": "labels"},
              pairs=(("shape", "x_pos"), ("shape", "y_pos"), ("shape", "scale"), ("shape", "rotation")),
              accept={"rotation.huge": "any finite rotation angle is valid (radians, periodic)"}),
        Entry("jaxinterp.datasets.make_shapes",
              lambda n, bias_fraction, seed, size, max_rotation, latents: datasets.make_shapes(
                  n, bias_fraction=bias_fraction, seed=seed, size=size, max_rotation=max_rotation, latents=latents),
              dict(n=6, bias_fraction=0.5, seed=1, size=8, max_rotation=0.5, latents="continuous"),
              accept={**seed, "max_rotation.none": "None selects the default 30 degrees (documented)"}),
        Entry("jaxinterp.datasets.make_shape_groups",
              lambda n, aligned_fraction, seed, size: datasets.make_shape_groups(
                  n, aligned_fraction=aligned_fraction, seed=seed, size=size),
              dict(n=6, aligned_fraction=0.5, seed=1, size=8), accept=seed),
        Entry("jaxinterp.datasets.load_shapes_bias",
              lambda bias_fraction, seed, n_train, n_test, size: datasets.load_shapes_bias(
                  bias_fraction, seed=seed, n_train=n_train, n_test=n_test, size=size),
              dict(bias_fraction=0.5, seed=1, n_train=6, n_test=3, size=8), accept=seed),
        Entry("jaxinterp.datasets.load_shapes_groups",
              lambda seed, aligned_fraction, n_train, n_val, n_test, size: datasets.load_shapes_groups(
                  seed, aligned_fraction=aligned_fraction, n_train=n_train, n_val=n_val, n_test=n_test, size=size),
              dict(seed=1, aligned_fraction=0.5, n_train=6, n_val=9, n_test=9, size=8), accept=seed),
        Entry("jaxinterp.datasets.bias_sweep",
              lambda fractions, n, seed, size: datasets.bias_sweep(fractions, n=n, seed=seed, size=size),
              dict(fractions=np.array([0.0, 0.5, 1.0]), n=6, seed=1, size=8),
              accept={**seed, "fractions.rank_down": "a single fraction is a sweep of one set (documented)"}),
        Entry("jaxinterp.datasets.shapes.sweep_sizes",
              lambda fractions, n: datasets.shapes.sweep_sizes(fractions, n),
              dict(fractions=np.array([0.0, 0.25, 1.0]), n=8),
              accept={"fractions.rank_down": "a single fraction is a sweep of one set (documented)"}),
    ]


@functools.cache
def _tiny_encoder():
    """A LeNet small enough for 16-pixel images, and its initial variables."""
    from jaxinterp.midrange.lenet import LeNet
    enc = LeNet(channels=(2, 2), dense=(4,), feat_size=4, dropout=0.2)
    return enc, enc.init(KEY, np.zeros((1, 16, 16, 1), np.float32))


def _training_entries():
    from jaxinterp.midrange import lenet, probe, training
    ys = LABELS[:12] % 3
    images = RNG.uniform(size=(12, 16, 16, 1)).astype(np.float32)   # 16-pixel images [12, 16, 16, 1]
    head_kinds = dict(kinds={"y_train": "labels", "y_test": "labels"},
                      pairs=(("f_train", "y_train"), ("f_test", "y_test")))
    probe_kinds = dict(kinds={"y_train": "labels", "y_test": "labels"},
                       pairs=(("x_train", "y_train"), ("x_test", "y_test")))
    return [
        Entry("jaxinterp.midrange.lenet.LeNet",
              lambda kernel_size, feat_size, n_classes, dropout: lenet.LeNet(
                  kernel_size=kernel_size, feat_size=feat_size, n_classes=n_classes, dropout=dropout).feat_size,
              dict(kernel_size=5, feat_size=8, n_classes=3, dropout=0.2)),
        Entry("jaxinterp.midrange.lenet.LinearHead",
              lambda n_classes, dropout: lenet.LinearHead(n_classes, dropout=dropout).n_classes,
              dict(n_classes=3, dropout=0.2)),
        Entry("jaxinterp.midrange.lenet.torch_layer_init",
              lambda fan_in: lenet.torch_layer_init(fan_in)["bias_init"](KEY, (3,)), dict(fan_in=4)),
        Entry("jaxinterp.midrange.training.torch_linear",
              lambda in_features, out_features: training.torch_linear(in_features, out_features).features,
              dict(in_features=4, out_features=3)),
        Entry("jaxinterp.midrange.training.cosine_epoch_schedule",
              lambda learning_rate, steps_per_epoch, period_epochs: training.cosine_epoch_schedule(
                  learning_rate, steps_per_epoch, period_epochs)(7),
              dict(learning_rate=1e-3, steps_per_epoch=3, period_epochs=10)),
        Entry("jaxinterp.midrange.training.train_epochs",
              lambda x, y, key, epochs, batch_size, learning_rate, period_epochs: training.train_epochs(
                  lenet.LinearHead(3, dropout=0.2), x, y, key=key, epochs=epochs, batch_size=batch_size,
                  learning_rate=learning_rate, period_epochs=period_epochs)[1],
              dict(x=LOGITS[:12], y=ys, key=KEY, epochs=2, batch_size=6, learning_rate=1e-3, period_epochs=10),
              kinds={"y": "labels"}, pairs=(("x", "y"),),
              accept={"x.rank_up": "a model decides its input ranks: [n, 1, 3] rows are valid inputs of a dense head"}),
        Entry("jaxinterp.midrange.probe.head_accuracy",
              lambda f_train, y_train, f_test, y_test, key, epochs, batch_size, dropout: probe.head_accuracy(
                  f_train, y_train, f_test, y_test, key=key, epochs=epochs, batch_size=batch_size, dropout=dropout),
              dict(f_train=LOGITS[:12], y_train=ys, f_test=LOGITS[12:20], y_test=LABELS[12:20] % 3, key=KEY,
                   epochs=2, batch_size=6, dropout=0.2), **head_kinds),
        Entry("jaxinterp.midrange.probe.probe_accuracy",
              lambda x_train, y_train, x_test, y_test, key, epochs, batch_size: probe.probe_accuracy(
                  *_tiny_encoder(), x_train, y_train, x_test, y_test, key=key, encoder_mode="train", epochs=epochs,
                  batch_size=batch_size, dropout=0.2),
              dict(x_train=images, y_train=ys, x_test=images[:6], y_test=ys[:6], key=KEY, epochs=1, batch_size=6),
              **probe_kinds),
    ]


def entries() -> list[Entry]:
    """This area's registered entries (built on first use: it imports the library)."""
    from jaxinterp import datasets, midrange
    return (_midrange_entries(midrange) + _retrain_entries(midrange) + _shapes_entries(datasets)
            + _training_entries())
