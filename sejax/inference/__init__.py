"""A trained model as a bundle: prediction on audio, streaming, export."""
