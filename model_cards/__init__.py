"""Model-card templates, installed as the package data ``hf_cxr_mae.model_cards``."""
