"""A data holder's side: data adapters, the enforcement point, the node CLI."""
