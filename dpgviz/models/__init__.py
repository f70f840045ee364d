"""Package data: the embedded default model lives in default/."""
