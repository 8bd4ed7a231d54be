"""Models built on the layers: LSTM -> Dense heads, the linear autoregressive part, the
character language model and the encoder-decoder translator. No data reading here."""
