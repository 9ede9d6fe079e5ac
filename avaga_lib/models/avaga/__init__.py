"""AVAGA: the adversarial VAE, its Grad-CAM attention, its losses and remedies (paper Sections 3-4)."""
