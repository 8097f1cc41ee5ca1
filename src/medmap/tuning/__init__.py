"""The optimisation loop (`medmap tune`): a search over the plans medmap can make for a dataset (`space`),
run by Optuna (`search`), ranked on validation cases with intervals (`leaderboard`)."""
