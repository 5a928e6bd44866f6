"""Where examples come from: corpora files -> audio -> log-Mel shards -> splits -> tf.data.

In pipeline order: `audio` (decode and resample) and `screening` (reject bad files),
`features` (the log-Mel front end; `frontend_jax` is the same in JAX), `shards` (the prepared
format), `prepare` (writing it, and `ensure_shards`: the shards a run uses), `splits` (which
examples train, validate and test; the leakage guard), `input_pipeline` (tf.data batches).
`demo`, `download` and `archive` supply corpora.
"""
