"""Direction learners against scikit-learn (and a PyTorch SAE loop), side by side on the same data.

Cases (sizes from the issue: 100k x 64 and 20k x 512; ``--quick`` shrinks them):
  * KMeans (k-means++, Lloyd to tol 1e-4, one init) and cosine K-means vs sklearn KMeans;
  * minibatch K-means, equal steps and batch size, vs sklearn MiniBatchKMeans;
  * FastICA (parallel, logcosh, tol 1e-4) vs sklearn FastICA;
  * NMF, equal coordinate-descent sweeps from NNDSVDa, vs sklearn NMF(solver="cd");
  * minibatch dictionary learning, equal steps (sklearn ``partial_fit`` on the same batches);
  * sparse-autoencoder training throughput (vectors/s, fraction of the measured matmul peak)
    vs the same ReLU+L1 SAE written in PyTorch, at d=512, m=1024, batch 1024 (every kind) and at
    the issue's d=512, m=4096, batch 4096 (ReLU+L1 and TopK);
  * a vmapped sweep of 4 ReLU+L1 SAEs over the L1 coefficient vs the 4 trainings one by one.
Each row reports both objectives (``ours_objective`` / ``baseline_objective``, lower is better)
so the speed ratio can be read as time to the same objective. Compilation is timed apart.

Run: ``python benchmarks/directions.py [--quick] [--only kmeans,ica,...]`` (``--only`` re-measures some
groups and keeps the other rows of the results file).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (RESULTS_DIR, block, measured_matmul_flops, row, sae_step_flops, time_fn,  # noqa: E402
                     write_results)

from jaxinterp import directions as jd  # noqa: E402
from jaxinterp.datasets import make_superposition_data  # noqa: E402


def _timed_once(fn):
    """Seconds of one call of ``fn`` (blocked), and its result."""
    start = time.perf_counter()
    out = block(fn())
    return time.perf_counter() - start, out


def _ours(fn, repeats):
    """Compile seconds (first call minus a steady call) and the median steady time."""
    first, out = _timed_once(fn)
    steady = time_fn(fn, repeats=repeats, warmup=0)
    return steady, max(first - steady, 0.0), out


def _pair(ours_fn, base_fn, repeats, *, budget_s: float = 20.0):
    """Time ours and the baseline alternately (the machine is shared: both see the same load).

    Ours is called once first (compilation; its excess over the steady time is reported as
    compile seconds). Then ``repeats`` rounds of (ours, baseline), fewer when one baseline call
    exceeds ``budget_s / repeats``. Returns ``(ours_median, base_median, compile_s, ours_out,
    base_out)``.
    """
    first, _ = _timed_once(ours_fn)
    ours_t, base_t = [], []
    ours_out = base_out = None
    for i in range(repeats):
        t, ours_out = _timed_once(ours_fn)
        ours_t.append(t)
        time.sleep(0.1)  # let the previous run's worker threads go idle
        t, base_out = _timed_once(base_fn)
        base_t.append(t)
        if t * repeats > budget_s:
            break
    ours_s = statistics.median(ours_t)
    return ours_s, statistics.median(base_t), max(first - ours_s, 0.0), ours_out, base_out


KEY = jax.random.key(0)


def _inertia(x, centers):
    d2 = (x**2).sum(1)[:, None] - 2 * x @ centers.T + (centers**2).sum(1)[None]
    return float(np.maximum(d2.min(1), 0).sum())


def bench_kmeans(name, x, k, repeats, rows):
    from sklearn.cluster import KMeans

    steady, sk_s, comp, res, sk = _pair(lambda: jd.fit(jd.kmeans(k, n_init=1), x, key=KEY),
                                        lambda: KMeans(k, n_init=1, random_state=0).fit(x), repeats)
    ours_obj = _inertia(x.astype(np.float64), np.asarray(res.components, np.float64))
    rows.append(row(f"kmeans {name} k={k}", steady, "sklearn KMeans", sk_s,
                    note=f"iters ours {int(res.info['n_iter'])} / sklearn {sk.n_iter_}", compile_s=comp,
                    ours_objective=ours_obj, baseline_objective=float(sk.inertia_)))
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    steady, sk_s, comp, res, sk = _pair(lambda: jd.fit(jd.kmeans(k, cosine=True, n_init=1), x, key=KEY),
                                        lambda: KMeans(k, n_init=1, random_state=0).fit(xn), repeats)
    c = sk.cluster_centers_ / np.linalg.norm(sk.cluster_centers_, axis=1, keepdims=True)
    rows.append(row(f"cosine kmeans {name} k={k}", steady, "sklearn KMeans (unit rows)", sk_s,
                    note="objective sum(1 - cos)", compile_s=comp, ours_objective=float(res.info["inertia"]),
                    baseline_objective=float((1 - (xn @ c.T).max(1)).sum())))


def bench_minibatch_kmeans(name, x, k, steps, repeats, rows):
    from sklearn.cluster import MiniBatchKMeans

    bs = 1024
    epochs = max(1, round(steps * bs / x.shape[0]))
    def ours():   # fit, then label every row (as sklearn's fit does)
        d = jd.fit(jd.minibatch_kmeans(k, batch_size=bs, steps=steps), x, key=KEY)
        return d, d.codes(x)

    steady, sk_s, comp, (res, _), sk = _pair(
        ours,
        lambda: MiniBatchKMeans(k, batch_size=bs, n_init=1, max_iter=epochs, random_state=0,
                                max_no_improvement=None, tol=0.0).fit(x), repeats)
    rows.append(row(f"minibatch kmeans {name} k={k}", steady, "sklearn MiniBatchKMeans", sk_s,
                    note=f"{steps} steps ours / {sk.n_steps_} sklearn, batch {bs}", compile_s=comp,
                    ours_objective=_inertia(x, np.asarray(res.components)),
                    baseline_objective=_inertia(x, sk.cluster_centers_)))


def bench_ica(name, x, k, repeats, rows):
    from sklearn.decomposition import FastICA

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        def ours():   # fit, then the sources of the training data (as sklearn's fit keeps them)
            d = jd.fit(jd.ica(k), x, key=KEY)
            return d, d.encode(x)

        steady, sk_s, comp, (res, sources), sk = _pair(
            ours, lambda: FastICA(k, random_state=0, whiten="unit-variance").fit(x), repeats)
    s_ours = np.asarray(sources)
    s_sk = sk.transform(x)
    gauss = float(np.mean(np.log(np.cosh(np.random.default_rng(0).standard_normal(2_000_000)))))

    def negentropy(s):
        """Summed logcosh negentropy approximation, sum_i (E[G(s_i)] - E[G(nu)])^2 (higher is better)."""
        return float(np.sum((np.mean(np.log(np.cosh(s)), axis=0) - gauss) ** 2))

    rows.append(row(f"fastica {name} k={k}", steady, "sklearn FastICA", sk_s,
                    note=f"iters ours {int(res.info['n_iter'])} / sklearn {sk.n_iter_}; negentropy higher is better",
                    compile_s=comp, ours_negentropy=negentropy(s_ours), baseline_negentropy=negentropy(s_sk)))


def bench_nmf(name, x, k, iters, repeats, rows):
    from sklearn.decomposition import NMF

    x = np.abs(x)
    model = NMF(k, init="nndsvda", solver="cd", max_iter=iters, tol=0.0, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learner = jd.nmf(k, max_iter=iters, tol=0.0, init="nndsvda")
        steady, sk_s, comp, res, w = _pair(lambda: jd.fit(learner, x, key=KEY),
                                           lambda: model.fit_transform(x), repeats)
    sk_obj = 0.5 * float(np.sum((x - w @ model.components_) ** 2))
    rows.append(row(f"nmf {name} k={k}", steady, "sklearn NMF cd", sk_s, note=f"{iters} sweeps each",
                    compile_s=comp, ours_objective=float(res.info["objective"]), baseline_objective=sk_obj))


def bench_dictionary(name, x, k, steps, alpha, repeats, rows):
    from sklearn.decomposition import MiniBatchDictionaryLearning

    bs = 256
    held = x[:2000]
    rng = np.random.default_rng(0)
    batches = [x[rng.integers(0, x.shape[0], bs)] for _ in range(steps)]

    def sk_fit():
        mb = MiniBatchDictionaryLearning(k, alpha=alpha, batch_size=bs, fit_algorithm="cd", random_state=0)
        for b in batches:
            mb.partial_fit(b)
        return mb

    learner = jd.dictionary(k, alpha=alpha, batch_size=bs, steps=steps, code_iter=100)
    steady, sk_s, comp, res, mb = _pair(lambda: jd.fit(learner, x, key=KEY), sk_fit, repeats)

    def lasso_objective(dct):
        dct = np.asarray(dct, np.float32)
        c = np.asarray(jd.sparse_encode(held, dct, alpha, n_iter=2000))
        return float(0.5 * np.sum((held - c @ dct) ** 2) + alpha * np.abs(c).sum()) / len(held)

    rows.append(row(f"dictionary learning {name} k={k}", steady, "sklearn MiniBatchDictionaryLearning", sk_s,
                    note=f"{steps} steps, batch {bs}, alpha {alpha}; objective: held-out lasso loss",
                    compile_s=comp, ours_objective=lasso_objective(res.components),
                    baseline_objective=lasso_objective(mb.components_)))


def _timed_steps(step, steps: int) -> float:
    """Seconds of ``step(i)`` for ``i < steps`` after three warm-up steps (a PyTorch training loop)."""
    for i in range(3):
        step(i)
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    return time.perf_counter() - start


def torch_sae_seconds(x, m, steps, bs, coef, lr):
    """Seconds for ``steps`` steps of the same ReLU+L1 SAE (unit-norm decoder rows) in PyTorch."""
    import torch

    torch.manual_seed(0)
    d = x.shape[1]
    w_dec = torch.nn.functional.normalize(torch.randn(m, d), dim=1)
    params = {"w_enc": w_dec.T.clone().requires_grad_(), "b_enc": torch.zeros(m, requires_grad=True),
              "w_dec": w_dec.clone().requires_grad_(), "b_dec": torch.zeros(d, requires_grad=True)}
    opt = torch.optim.Adam(params.values(), lr=lr)
    xt = torch.from_numpy(x)
    idx = torch.randint(0, x.shape[0], (steps, bs))

    def step(i):
        u = xt[idx[i]]
        f = torch.relu((u - params["b_dec"]) @ params["w_enc"] + params["b_enc"])
        err = u - (f @ params["w_dec"] + params["b_dec"])
        loss = (err**2).sum(-1).mean() + coef * (f * params["w_dec"].norm(dim=-1)).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        with torch.no_grad():
            g = params["w_dec"].grad
            g -= (g * params["w_dec"]).sum(-1, keepdim=True) * params["w_dec"]
        opt.step()
        with torch.no_grad():
            params["w_dec"].copy_(torch.nn.functional.normalize(params["w_dec"], dim=1))
        return loss

    return _timed_steps(step, steps)


def saelens_sae_seconds(x, m, steps, bs, coef, lr):
    """Seconds for ``steps`` steps of SAELens's own ``StandardTrainingSAE`` (ReLU + L1 weighted by
    the decoder norms) with Adam on the same activations, or None when ``sae_lens`` is not installed."""
    try:
        import torch
        from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig
        from sae_lens.saes.sae import TrainStepInput
    except ImportError:
        return None
    torch.manual_seed(0)
    sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=x.shape[1], d_sae=m, l1_coefficient=coef))
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    xt = torch.from_numpy(x)
    idx = torch.randint(0, x.shape[0], (steps, bs))

    def step(i):
        out = sae.training_forward_pass(TrainStepInput(xt[idx[i]], {"l1": coef}, None, i, False))
        opt.zero_grad()
        out.loss.backward()
        opt.step()

    return _timed_steps(step, steps)


def _torch_threads():
    """The torch module with every CPU thread in use, or None (the PyTorch baseline is optional)."""
    try:
        import torch
    except ImportError:   # the `bench` extra is not installed
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    return torch


def _sae_fit(x, m, steps, bs, kind, coef=None):
    """A function training one SAE of ``kind`` for ``steps`` steps in one compiled chunk."""
    extra = {"relu": {"aux_k": 0}, "topk": {"k": 32}, "batchtopk": {"k": 32}, "jumprelu": {}}[kind]
    coef = (0.1 if kind == "relu" else 1.0) if coef is None else coef
    learner = jd.sae(m, kind=kind, steps=steps, batch_size=bs, coef=coef, **extra)
    return lambda: jd.fit(learner, x, key=KEY, chunk_size=steps).components


def bench_sae(x, m, steps, bs, peak, rows, *, kinds=("relu", "topk", "batchtopk", "jumprelu"), torch_baseline=True,
              repeats=1):
    """SAE training throughput per kind: one warm-up (compiling) call, then timed calls.

    The ReLU+L1 row alternates with the same SAE in PyTorch when ``torch_baseline`` (and torch is
    installed). ``peak_fraction`` is the step's matmul FLOPs (``10 b d m``) per second over ``peak``.
    """
    torch = _torch_threads() if torch_baseline else None
    d = x.shape[1]
    flops = sae_step_flops(bs, d, m) * steps
    for kind in kinds:
        fit = _sae_fit(x, m, steps, bs, kind)
        baseline, base_s = "-", None
        if kind == "relu" and torch is not None:
            # SAELens's training SAE when installed, else the same SAE as a plain PyTorch loop; either
            # times itself (after its own warm-up steps), alternating with ours
            use_saelens = saelens_sae_seconds(x[:bs], m, 1, bs, 0.1, 1e-3) is not None
            baseline_fn = saelens_sae_seconds if use_saelens else torch_sae_seconds
            torch_times: list[float] = []
            steady, _, comp, _, _ = _pair(fit, lambda: torch_times.append(baseline_fn(x, m, steps, bs, 0.1, 1e-3)),
                                          max(repeats, 2))
            baseline = "SAELens StandardTrainingSAE" if use_saelens else "PyTorch (same SAE)"
            base_s = statistics.median(torch_times)
        else:
            steady, comp, _ = _ours(fit, repeats)
        rows.append(row(f"sae {kind} train d={d} m={m} b={bs}", steady, baseline, base_s,
                        note=f"{steps} steps; {steps * bs / steady:,.0f} vectors/s", compile_s=comp,
                        vectors_per_s=steps * bs / steady, peak_fraction=flops / steady / peak))


def bench_sae_sweep(x, m, steps, bs, peak, repeats, rows, coefs=(0.03, 0.1, 0.3, 1.0)):
    """One ``vmap`` over L1 coefficients against the same trainings run one after another.

    The sweep shares the batch stream (the sampling key is not vmapped, so each step gathers one
    minibatch for all members) and runs as one compiled scan; the baseline calls ``fit`` once per
    coefficient (one compiled program, the coefficient lives in the state).
    """
    d = x.shape[1]
    learner = lambda c: jd.sae(m, kind="relu", coef=c, steps=steps, batch_size=bs, aux_k=0)  # noqa: E731
    sweep = jax.jit(jax.vmap(lambda c: jd.fit(learner(c), x, key=KEY, chunk_size=steps).components))
    cs = np.asarray(coefs, np.float32)
    separate = lambda: [jd.fit(learner(float(c)), x, key=KEY, chunk_size=steps).components for c in coefs]  # noqa: E731
    block(separate())   # compile the separate trainings' program outside the timing
    sweep_s, sep_s, comp, _, _ = _pair(lambda: sweep(cs), separate, repeats)
    flops = len(coefs) * sae_step_flops(bs, d, m) * steps
    rows.append(row(f"sae sweep x{len(coefs)} (vmap) d={d} m={m}", sweep_s,
                    f"{len(coefs)} separate trainings", sep_s,
                    note="one vmap over L1 coefficients sharing the batch stream", compile_s=comp,
                    vectors_per_s=len(coefs) * steps * bs / sweep_s, peak_fraction=flops / sweep_s / peak,
                    separate_peak_fraction=flops / sep_s / peak))


GROUPS = ("kmeans", "minibatch", "ica", "nmf", "dictionary", "sae", "sae_large", "sweep")


def _merge(name: str, rows: list[dict]) -> list[dict]:
    """``rows`` in place of the rows with the same case in the results file ``name`` (others kept)."""
    path = RESULTS_DIR / f"{name}.json"
    if not path.exists():
        return rows
    new = {r["case"]: r for r in rows}
    old = json.loads(path.read_text())["rows"]
    merged = [new.pop(r["case"], r) for r in old]
    return merged + list(new.values())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    p.add_argument("--only", default=",".join(GROUPS),
                   help=f"comma-separated groups to run, of {','.join(GROUPS)}; the other rows of an existing "
                        "results file are kept")
    args = p.parse_args(argv)
    only = set(args.only.split(","))
    if not only <= set(GROUPS):
        p.error(f"--only: unknown groups {sorted(only - set(GROUPS))}; choose from {','.join(GROUPS)}")
    q = args.quick
    repeats = 1 if q else 3
    na, da = (10_000, 32) if q else (100_000, 64)
    nb, db = (4_000, 128) if q else (20_000, 512)
    def data(seed, n, d, prob):
        # sparse features in superposition; rows with no active feature are replaced (cosine K-means
        # needs non-zero rows)
        x, _, _ = make_superposition_data(seed, 2 * n, 2 * d, d, prob)
        return np.ascontiguousarray(x[np.linalg.norm(x, axis=1) > 0][:n])

    xa = data(0, na, da, 0.05)
    xb = data(1, nb, db, 0.02)
    peak = measured_matmul_flops(512 if q else 1024)
    rows: list[dict] = []
    for name, x, k in ((f"{na}x{da}", xa, 64 if not q else 16), (f"{nb}x{db}", xb, 64 if not q else 16)):
        if "kmeans" in only:
            bench_kmeans(name, x, k, repeats, rows)
        if "minibatch" in only:
            bench_minibatch_kmeans(name, x, k, 100 if q else 300, repeats, rows)
        if "ica" in only:
            bench_ica(name, x, min(16, x.shape[1]) if q else 32, repeats, rows)
        if "nmf" in only:
            bench_nmf(name, x, 16 if q else 32, 20 if q else 100, repeats, rows)
    if "dictionary" in only:
        bench_dictionary(f"{na}x{da}", xa, 2 * da, 50 if q else 200, 0.1, repeats, rows)
    if only & {"sae", "sae_large", "sweep"}:
        # the peak is re-measured next to the SAE runs (the machine is shared; take the best)
        peak = max([peak] + [measured_matmul_flops(1024 if q else 2048) for _ in range(3)])
    if "sae" in only:
        bench_sae(xb, 2 * db, 20 if q else 40, 256 if q else 1024, peak, rows)
    if "sae_large" in only:   # the size: d=512, m=4096, batch 4096 (86 GFLOP a step)
        bench_sae(xb, 8 * db, 2 if q else 5, 1024 if q else 4096, peak, rows, kinds=("relu", "topk"),
                  torch_baseline=False)
    if "sweep" in only:
        bench_sae_sweep(xb, 2 * db, 20 if q else 40, 256 if q else 1024, peak, repeats, rows)
    for r in rows:
        if "ours_objective" in r:
            r["objective_ratio"] = r["ours_objective"] / r["baseline_objective"] if r["baseline_objective"] else None
    name = "directions" + ("_quick" if q else "")
    if only != set(GROUPS):
        rows = _merge(name, rows)
    write_results(name, {"quick": q, "data_a": [na, da], "data_b": [nb, db], "matmul_peak_flops": peak,
                         "repeats": repeats, "cpu_count": os.cpu_count(), "groups_last_run": sorted(only)}, rows)


if __name__ == "__main__":
    main()
