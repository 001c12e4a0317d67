"""Getting an artifact to its users: packages, serving layouts, OCI registries, signatures."""
