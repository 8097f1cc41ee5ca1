"""Planning and training: the planner turns a dataset fingerprint into a Plan; the trainer obeys it."""
