"""Many models at once: recipes, runs in worker processes, CI matrices."""
