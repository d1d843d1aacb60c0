"""What nodes and the coordinator share: specs, models, DP training, aggregation, apps."""
