"""The one log-likelihood engine: ``(context, continuation)`` token pairs scored on a causal LM.

:mod:`~iaa_eval.models.loglik.scorer` runs the forwards (one row per distinct input, shared
prefixes once, only the needed logits); :mod:`~iaa_eval.models.loglik.packing` lays prefix groups
out in long packed sequences with their attention masks; :mod:`~iaa_eval.models.loglik.memory`
sizes the forwards to the device's memory. Text tasks reach it through
:mod:`iaa_eval.tasks.lm_bridge`, the mini-world's quick check through
:mod:`iaa_eval.miniworld.score`.
"""
