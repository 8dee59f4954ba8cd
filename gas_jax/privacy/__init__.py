"""Privacy of split learning (paper Appendix I, eq. 44; spec/privacy.md): how much of a client's
images the server can rebuild from its activations, and the measures the defences use.

  similarity.py  MSE, PSNR, SSIM of reconstructions in [0, 1] (Gaussian 11x11, sigma 1.5)
  dcor.py        distance correlation DCOR(x, z) (NoPeek)
  decoder.py     ResSFL's inversion decoder res_normN{N}C{C}
  images.py      normalised dataset images back to [0, 1]
  attack.py      the model-inversion attack on a trained run (`python -m gas_jax.attack`)
  regularisers.py  the defences in the split methods' client loss (eq. 44: inversion, NoPeek)
"""
from gas_jax.privacy.dcor import distance_correlation
from gas_jax.privacy.decoder import Decoder, decoder_name, make_decoder
from gas_jax.privacy.images import image_range, to_unit
from gas_jax.privacy.similarity import (mse, mse_per_image, psnr, psnr_per_image, ssim,
                                        ssim_per_image)

__all__ = ["distance_correlation", "Decoder", "decoder_name", "make_decoder", "image_range",
           "to_unit", "mse", "mse_per_image", "psnr", "psnr_per_image", "ssim",
           "ssim_per_image"]
