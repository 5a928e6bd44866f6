"""The CNN+BiLSTM and the XLA:CPU formulations of its ops."""
