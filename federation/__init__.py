"""What nodes and the coordinator share: job specs, models, DP training, aggregation, Flower apps."""
