"""Bad-input battery registrations: capture, streaming, keys, loop, claims, sharding, distributed, launch.

``entries()`` registers every public function of the area once with a valid call; ``EXEMPT``
names the public callables that take no user data, with the reason.
"""

import jax
import jax.numpy as jnp
import numpy as np

from _battery import Entry
from _battery_inputs import *  # noqa: F403 - the shared battery inputs

EXEMPT: dict[str, str] = {
    "jaxinterp.sharding.enable_compilation_cache": "changes process-wide JAX configuration; its only argument is "
                                                   "a folder path, tested in test_sharding",
    "jaxinterp.launch.main": "the command line: argparse reports a bad flag with a usage line and exit status 2 "
                             "(SystemExit, not an exception to catch); tested in test_distributed",
    "jaxinterp.conv.conv_general_dilated": "a drop-in for jax.lax.conv_general_dilated inside Flax's Conv, called "
                                           "with tracers under jit: lax checks its shapes; tested in test_conv",
}

#: entries whose bad-input checks are missing in the library (strict xfail until the checks land):
#: name -> what is missing
PENDING: dict[str, str] = {}

MAPS = RNG.normal(size=(4, 3, 3, 2)).astype(np.float32)             # feature maps [batch, h, w, channels]
SAMPLES_A = np.array([3.1, 2.9, 3.4, 3.0, 3.3, 3.2], np.float64)     # per-seed measurements
SAMPLES_B = np.array([1.0, 1.2, 0.9, 1.1, 1.3, 0.8], np.float64)
POOLED = "samples of any shape are pooled (documented)"
INCONCLUSIVE = "a non-finite measurement gives the verdict INCONCLUSIVE instead of stopping the scorecard (documented)"


def _tiny_net(x):
    """A model that checks its own input: capture hands the input over and lets the model's error through."""
    if not hasattr(x, "shape"):
        raise TypeError(f"`x` must be an array; got {type(x).__name__}.")
    return jax.nn.relu(x @ jnp.ones((8, 4), x.dtype)) @ jnp.ones((4, 2), x.dtype)


def _capture_entries():
    from jaxinterp import capture
    model = dict(accept={**{f"x.{v}": PASS_THROUGH for v in ("nan", "inf", "huge", "rank_up", "empty")},
                         "x.rank_down": MODEL_DECIDES})
    return [
        # capture records the model's values unchanged, NaN included: they are zeroed after the call so
        # that the finiteness check applies to capture itself
        Entry("jaxinterp.capture.capture",
              lambda x: jnp.nan_to_num(capture.capture(_tiny_net)(x)[1]["relu"], posinf=0.0), dict(x=XS), **model),
        Entry("jaxinterp.activation_names", lambda x: capture.activation_names(_tiny_net, x), dict(x=XS),
              **model),
        # no data argument: a rule object (its own field checks are FunctionRule's)
        Entry("jaxinterp.capture.register_rule",
              lambda name: capture.register_rule(capture.FunctionRule(name, {"battery_act"}), overwrite=True).name,
              dict(name="battery_act")),
        Entry("jaxinterp.capture.FunctionRule", lambda functions: capture.FunctionRule("f", functions).name,
              dict(functions=("gelu",))),
        *_reduce_entries(capture),
        *_intervene_entries(capture, model),
    ]


def _reduced(capture, reducer):
    """Fused reduction of a ReLU over feature maps ``[batch, h, w, channels]``."""
    return lambda maps: capture.capture(jax.nn.relu, reduce=reducer)(maps)[1]["relu"]


def _reduce_entries(capture):
    # the maps are the model's own values (here the input of a ReLU): only the reducers' settings vary
    axes = {"axes": "other"}
    return [
        Entry("jaxinterp.capture.channel_mean", lambda axes: _reduced(capture, capture.channel_mean(axes))(MAPS),
              dict(axes=(-3, -2)), kinds=axes),
        Entry("jaxinterp.capture.channel_max", lambda axes: _reduced(capture, capture.channel_max(axes))(MAPS),
              dict(axes=(-3, -2)), kinds=axes),
        Entry("jaxinterp.capture.channel_argmax",
              lambda axes: _reduced(capture, capture.channel_argmax(axes))(MAPS), dict(axes=(-3, -2)), kinds=axes),
        Entry("jaxinterp.capture.channel_topk", lambda k: _reduced(capture, capture.channel_topk(k))(MAPS),
              dict(k=2)),
        Entry("jaxinterp.capture.token_mean", lambda axis: _reduced(capture, capture.token_mean(axis))(MAPS),
              dict(axis=-2)),
        Entry("jaxinterp.capture.last_token", lambda axis: _reduced(capture, capture.last_token(axis))(MAPS),
              dict(axis=-2)),
    ]


def _intervene_entries(capture, model):
    hidden = np.asarray(jax.nn.relu(XS @ np.ones((8, 4), np.float32)))   # _tiny_net's ReLU inputs [n, 4]
    direction = np.array([1.0, 0.0, 0.0, 0.0], np.float32)

    def edited(edit, x=XS):
        return capture.intervene(_tiny_net, {"relu": edit})(x)

    return [
        Entry("jaxinterp.capture.intervene", lambda x: edited(capture.zero_ablate(), x), dict(x=XS), **model),
        Entry("jaxinterp.capture.zero_ablate", lambda: edited(capture.zero_ablate()), {}),
        Entry("jaxinterp.capture.mean_ablate", lambda mean: edited(capture.mean_ablate(mean)),
              dict(mean=hidden.mean(0)),
              accept={"mean.rank_up": "a mean broadcasts to the activation's shape (documented)",
                      "mean.rank_down": "a scalar mean broadcasts to every unit (documented)"}),
        Entry("jaxinterp.capture.patch", lambda value: edited(capture.patch(value)), dict(value=hidden)),
        Entry("jaxinterp.capture.patch_all",
              lambda cache: capture.intervene(_tiny_net, capture.patch_all(cache))(XS),
              dict(cache={"relu": hidden}), kinds={"cache": "other"}),
        Entry("jaxinterp.capture.project_out", lambda direction: edited(capture.project_out(direction)),
              dict(direction=direction)),
        Entry("jaxinterp.capture.add_direction",
              lambda direction, scale: edited(capture.add_direction(direction, scale)),
              dict(direction=direction, scale=0.5)),
    ]


def _stream_entries():
    from jaxinterp import streaming
    return [
        Entry("jaxinterp.apply_in_batches",
              lambda fn, data, batch_size: streaming.apply_in_batches(fn, data, batch_size=batch_size),
              # the function zeroes non-finite values itself: it receives them unchanged
              dict(fn=lambda b: jnp.nan_to_num(b, posinf=0.0) * 2.0, data=XS, batch_size=4), kinds={"fn": "other"},
              accept={"data.nan": PASS_THROUGH, "data.inf": PASS_THROUGH, "data.huge": PASS_THROUGH,
                      "data.rank_up": PASS_THROUGH, "data.rank_down": PASS_THROUGH,
                      "data.float16": PASS_THROUGH}),
        Entry("jaxinterp.stream",
              lambda data, batch_size, top_k: streaming.stream(lambda b: {"h": jax.nn.relu(b)}, data,
                                                               batch_size=batch_size, top_k=top_k),
              dict(data=XS, batch_size=4, top_k=2),
              aliases={"data": ("activations",)},
              accept={"top_k.zero": "top_k=0 turns the top-k tracking off (documented)",
                      "data.rank_up": PASS_THROUGH, "data.rank_down": PASS_THROUGH}),
        Entry("jaxinterp.reduce_spatial",
              lambda a, keep_rank: streaming.reduce_spatial({"h": a}, "mean", keep_rank=keep_rank)["h"],
              dict(a=MAPS, keep_rank=2), aliases={"a": ("acts",)},
              accept={"a.rank_down": "a map [batch, h, channels] reduces its one spatial axis (documented)",
                      "a.rank_up": "maps [batch, *spatial, channels] may have any number of spatial axes"}),
    ]


def _util_entries():
    from jaxinterp import keys, loop
    from jaxinterp.studies import claims

    def keyed_chunks(key, steps, chunk_size):
        def chunk_fn(total, step_keys):
            return total + len(step_keys), jax.vmap(jax.random.key_data)(step_keys)[:, 0]

        return loop.run_keyed_chunks(chunk_fn, 0, key=key, steps=steps, chunk_size=chunk_size)[1]

    def chunks(steps, chunk_size, start):
        return loop.run_chunks(lambda s, first, n: s + n, 0, steps=steps, chunk_size=chunk_size, start=start)

    return [
        Entry("jaxinterp.keys.named_key", lambda key: jax.random.key_data(keys.named_key(key, "a", 3)),
              dict(key=KEY)),
        Entry("jaxinterp.keys.name_hash", lambda name: keys.name_hash(name), dict(name="stage")),
        Entry("jaxinterp.loop.chunk_sizes", lambda steps, start, chunk_size: loop.chunk_sizes(steps, start, chunk_size),
              dict(steps=10, start=2, chunk_size=4), accept={"start.zero": "start=0 is a fresh run"}),
        Entry("jaxinterp.loop.run_chunks", chunks, dict(steps=10, chunk_size=4, start=2),
              accept={"start.zero": "start=0 is a fresh run"}),
        Entry("jaxinterp.loop.run_keyed_chunks", keyed_chunks, dict(key=KEY, steps=10, chunk_size=4)),
        Entry("jaxinterp.studies.claims.smallest_p",
              lambda n_larger, n_smaller: claims.smallest_p(n_larger, n_smaller), dict(n_larger=5, n_smaller=6),
              accept={"n_smaller.none": "None selects the paired (Wilcoxon) test (documented)"}),
        Entry("jaxinterp.studies.claims.within",
              lambda paper_value, ours, tolerance: claims.within("c", paper_value, ours, tolerance=tolerance).verdict,
              dict(paper_value=3.0, ours=SAMPLES_A, tolerance=0.5),
              accept={"ours.nan": INCONCLUSIVE, "ours.inf": INCONCLUSIVE, "ours.rank_up": POOLED,
                      "ours.rank_down": POOLED}),
        Entry("jaxinterp.studies.claims.ordering",
              lambda larger, smaller, alpha: claims.ordering("c", larger, smaller, alpha=alpha).verdict,
              dict(larger=SAMPLES_A, smaller=SAMPLES_B, alpha=0.05),
              accept={f"{a}.{v}": INCONCLUSIVE if v in ("nan", "inf") else POOLED
                      for a in ("larger", "smaller") for v in ("nan", "inf", "rank_up", "rank_down")}),
        Entry("jaxinterp.studies.claims.paired_ordering",
              lambda larger, smaller, alpha: claims.paired_ordering("c", larger, smaller, alpha=alpha).verdict,
              dict(larger=SAMPLES_A, smaller=SAMPLES_B, alpha=0.05), pairs=(("larger", "smaller"),),
              accept={f"{a}.{v}": INCONCLUSIVE if v in ("nan", "inf") else POOLED
                      for a in ("larger", "smaller") for v in ("nan", "inf", "rank_up")}),
    ]


def entries() -> list[Entry]:
    """This area's registered entries (built on first use: it imports the library)."""
    return [*_capture_entries(), *_stream_entries(), *_util_entries(), *_sharding_entries(), *_distributed_entries(),
            *_launch_entries()]


def _sharding_entries():
    from jaxinterp import sharding
    # values are copied, never computed with: NaN rows come back as they went in (zeroed after the call
    # so that the finiteness check applies to the placement itself)
    padding = "values are copied, not computed with: padding repeats the last row whatever it holds"
    return [
        Entry("jaxinterp.sharding.pad_leading", lambda tree, multiple: jnp.nan_to_num(sharding.pad_leading(tree, multiple)[0], posinf=0.0),
              dict(tree=XS[:5], multiple=4), aliases={"tree": ("leading axis",)},
              accept={"tree.nan": padding, "tree.inf": padding, "tree.huge": padding,
                      "tree.rank_up": "a leading axis of length 1 pads to the multiple",
                      "tree.rank_down": "a rank-1 leaf is a leading axis (of its 8 entries)"}),
        Entry("jaxinterp.sharding.unpad_leading", lambda tree, n: sharding.unpad_leading(tree, n),
              dict(tree=XS, n=5), kinds={"tree": "other"}),
        Entry("jaxinterp.sharding.padded_size", lambda n, multiple: sharding.padded_size(n, multiple),
              dict(n=5, multiple=4), accept={"n.zero": "an empty axis needs no padding"}),
        Entry("jaxinterp.sharding.shard_leading", lambda tree: jnp.nan_to_num(sharding.shard_leading(tree), posinf=0.0), dict(tree=XS),
              accept={"tree.nan": padding, "tree.inf": padding, "tree.huge": padding, "tree.rank_up": padding,
                      "tree.rank_down": padding, "tree.empty": "an empty axis splits evenly over every mesh"}),
        Entry("jaxinterp.sharding.replicate", lambda tree: sharding.replicate(tree), dict(tree=XS),
              kinds={"tree": "other"}),
        Entry("jaxinterp.sharding.leading_sharding",
              lambda ndim: sharding.leading_sharding(sharding.leading_axis_mesh(), ndim).spec[0], dict(ndim=2)),
        Entry("jaxinterp.sharding.leading_axis_mesh", lambda axis_name: sharding.leading_axis_mesh(
            axis_name=axis_name).size, dict(axis_name="i")),
        Entry("jaxinterp.sharding.replicated", lambda: sharding.replicated(sharding.leading_axis_mesh()).spec,
              dict()),
        Entry("jaxinterp.sharding.default_cache_dir", lambda: str(sharding.default_cache_dir()), dict()),
    ]


def _distributed_entries():
    from jaxinterp import distributed
    n_rows = 2 * jax.device_count()
    copied = "values are copied, not computed with (as shard_leading)"
    return [
        # one process: the settings are checked and nothing is started (JAX is already running here)
        Entry("jaxinterp.distributed.initialize",
              lambda coordinator_address, num_processes, process_id: distributed.initialize(
                  coordinator_address, num_processes, process_id),
              dict(coordinator_address="127.0.0.1:1234", num_processes=1, process_id=0),
              accept={"process_id.zero": "process 0 is the coordinator's process"}),
        Entry("jaxinterp.distributed.is_initialized", lambda: distributed.is_initialized(), dict()),
        Entry("jaxinterp.distributed.is_main_process", lambda: distributed.is_main_process(), dict()),
        Entry("jaxinterp.distributed.global_mesh", lambda axis_name: distributed.global_mesh(axis_name).size,
              dict(axis_name="i")),
        Entry("jaxinterp.distributed.local_rows",
              lambda n_rows: distributed.local_rows(n_rows, distributed.global_mesh()).stop, dict(n_rows=n_rows)),
        Entry("jaxinterp.distributed.from_process_local",
              lambda local, axis: jnp.nan_to_num(distributed.from_process_local(local, axis=axis), posinf=0.0),
              dict(local=X[:n_rows], axis=0),
              accept={"local.nan": copied, "local.inf": copied, "local.huge": copied,
                      "local.rank_up": "a leading axis of length 1 is a block of one row per process",
                      "local.rank_down": "a rank-1 block is split along its one axis",
                      "local.empty": "an empty block splits evenly", "axis.zero": "axis 0 is the default"}),
        Entry("jaxinterp.distributed.gather", lambda tree: distributed.gather(tree), dict(tree=XS),
              kinds={"tree": "other"}),
        Entry("jaxinterp.distributed.barrier", lambda name: distributed.barrier(name) or 0, dict(name="battery")),
    ]


def _launch_entries():
    import sys

    from jaxinterp import launch
    return [
        Entry("jaxinterp.launch.free_port", lambda host: launch.free_port(host), dict(host="127.0.0.1")),
        Entry("jaxinterp.launch.process_env",
              lambda process_id, num_processes: int(launch.process_env(process_id, num_processes, "127.0.0.1:1",
                                                                       base={})["JAXINTERP_PROCESS_ID"]),
              dict(process_id=1, num_processes=2),
              accept={"process_id.zero": "process 0 is the coordinator: a valid index"}),
        # a real launch of a command that exits at once (one process); the child execs at once, so
        # subprocess's warning about forking a multithreaded (JAX) process does not apply
        Entry("jaxinterp.launch.launch",
              lambda command, num_processes, grace: _quiet_fork(launch.launch, command, num_processes, grace=grace),
              dict(command=[sys.executable, "-c", "pass"], num_processes=1, grace=1.0)),
    ]


def _quiet_fork(fn, *args, **kwargs):
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
        return fn(*args, **kwargs)
