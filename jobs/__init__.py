"""Jobs: each a plain function with a typed config, runnable locally or on a Ray cluster."""
