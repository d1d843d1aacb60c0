"""Cross-holder linkage: PSI alignment of pseudonyms and MPC statistics and GLMs over them."""

__all__ = [
    "errors",
    "jobs",
    "launch",
    "linked_run",
    "mpc_glm",
    "mpc_party",
    "mpc_runtime",
    "mpc_stats",
    "psi",
]
