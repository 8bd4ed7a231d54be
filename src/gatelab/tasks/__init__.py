"""Task kinds: what each kind of run builds, trains, loads, evaluates and predicts."""
