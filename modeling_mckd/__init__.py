"""MCKD: text-video retrieval with multimodal contrastive knowledge distillation."""
