"""The estimator: matrix-based Rényi α-entropy, MI, per-neuron kernel widths, the MI map (chapters 1–3)."""
