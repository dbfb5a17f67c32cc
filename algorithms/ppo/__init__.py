"""PPO (Schulman et al. 2017): clipped surrogate, GAE advantages, epochs of minibatches over synchronous rollouts."""
from algorithms.ppo.config import FAMILY_DEFAULTS, PPOConfig
from algorithms.ppo.learner import (PPOState, explained_variance, init_state, make_optimizer, make_update_fn,
                                    masked_moments, ppo_loss, split_agents, stratified_minibatches)
from algorithms.registry import Algorithm, register

METRICS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_frac", "explained_variance", "learning_rate",
           "grad_norm", "loss")

register(Algorithm(name="ppo", config=PPOConfig, init_state=init_state, make_update_fn=make_update_fn,
                   metrics=METRICS, source="rollouts", split_agents=split_agents))

__all__ = ["FAMILY_DEFAULTS", "METRICS", "PPOConfig", "PPOState", "explained_variance", "init_state",
           "make_optimizer", "make_update_fn", "masked_moments", "ppo_loss", "split_agents", "stratified_minibatches"]
