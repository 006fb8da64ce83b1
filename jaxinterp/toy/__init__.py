"""Toy models of polysemanticity: incidental (Lecomte et al. 2023) and superposition (Elhage et al. 2022)."""

from jaxinterp.toy.incidental import (
    IncidentalConfig,
    basis_loss_and_grad,
    count_polysemantic,
    forward,
    fourth_norm,
    init_weights,
    loss,
    make_init,
    make_loss_and_grad,
    make_optimizer,
    represents,
)
from jaxinterp.toy.theory import (
    NoiseResult,
    SparsificationTrace,
    loglog_slope,
    noise_experiment,
    predicted_active,
    predicted_l1_norm,
    simulate_sparsification,
    sparsification_agreement,
    theory_count,
    winner_agreement,
)
from jaxinterp.toy.training import (
    FitResult,
    TrainState,
    default_seed_block,
    fit,
    init_state,
    initial_params,
    make_step,
    run_steps,
)
from jaxinterp.toy import superposition
from jaxinterp.toy.sweep import collisions_sweep

__all__ = [
    "FitResult", "IncidentalConfig", "NoiseResult", "SparsificationTrace", "TrainState", "basis_loss_and_grad",
    "collisions_sweep", "count_polysemantic", "fit", "forward", "fourth_norm",
    "init_weights", "loglog_slope", "loss", "make_init", "make_loss_and_grad",
    "make_optimizer", "noise_experiment", "predicted_active", "predicted_l1_norm", "represents",
    "simulate_sparsification", "sparsification_agreement", "superposition", "theory_count",
    "winner_agreement",
]
