"""Where examples come from: corpora files -> audio -> log-Mel shards -> tf.data batches."""
