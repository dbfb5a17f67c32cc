"""IMPALA (Espeholt et al. 2018): V-trace actor-critic over trajectories from a queue fed by actors."""
from algorithms.impala.config import FAMILY_DEFAULTS, ImpalaConfig
from algorithms.impala.learner import ImpalaState, impala_loss, init_state, make_optimizer, make_update_fn
from algorithms.registry import Algorithm, register

METRICS = ("loss", "policy_loss", "value_loss", "entropy", "kl", "rho_mean", "rho_clip_frac", "learning_rate",
           "grad_norm")

register(Algorithm(name="impala", config=ImpalaConfig, init_state=init_state, make_update_fn=make_update_fn,
                   metrics=METRICS, source="actors"))

__all__ = ["FAMILY_DEFAULTS", "METRICS", "ImpalaConfig", "ImpalaState", "impala_loss", "init_state",
           "make_optimizer", "make_update_fn"]
