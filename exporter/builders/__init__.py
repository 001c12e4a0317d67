"""One module per backend that writes a variant's files, and the kit they share."""
