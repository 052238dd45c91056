"""The book's experiments: fine-tuning, the BERT-tiny and LM sweeps, the paper's numbers, figures."""
