"""Training: the tiny local model, view data into `datasets` for TRL, one module per method (SFT, KTO, DPO) and
their recipes. It knows no environment: `factory/` hands it a corpus or a dataset built from a warehouse view."""
