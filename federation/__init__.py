"""What nodes and the coordinator share: specs, models, DP training, aggregation, apps."""

# The public API lives in the modules, each imported on its own (importing the package
# loads none of them, so a light command never pays for Flower or torch).
__all__: list[str] = []
