"""Where a model comes from: the pin, the Hub cache, the model folder's facts and shape checks."""
