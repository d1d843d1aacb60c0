"""Node policies, privacy budgets and disclosure-control rules."""
