"""The Optuna study of a `search:` experiment."""
