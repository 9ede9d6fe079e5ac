"""The autoencoder baselines AE-L2 and AE-SSIM (Bergmann et al., paper Table 2)."""
