"""Default configuration: the reference front end and network, trained on the demo corpus.

Every experiment config in ``experiments/configs/`` starts from ``get_config()`` here and
changes only what it needs, so the defaults are the one place the reference lives
(``shared/reference-model.md``: 16 kHz, 3.0 s, n_fft 512, win 400, hop 160, 64 Mel bands to
8 kHz in dB; four conv blocks 32-64-128-128, two BiLSTM layers of 128 units, mean pooling).
"""

from __future__ import annotations

import ml_collections

EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")


def get_features_config() -> ml_collections.ConfigDict:
    """The log-Mel front end. Its fingerprint decides whether prepared shards can be reused."""
    f = ml_collections.ConfigDict()
    f.sample_rate = 16000
    f.duration_s = 3.0  # fixed analysis window; see `crop` and `pad`
    # Clips longer than the window: 'start' keeps the first `duration_s` seconds (the
    # reference), 'center' keeps the middle. Shorter clips are zero-padded at the end.
    f.crop = "start"
    f.n_fft = 512
    f.win_length = 400
    f.hop_length = 160
    f.window = "hann"
    f.center = True
    f.n_mels = 64
    f.fmin = 0.0
    f.fmax = 8000.0
    f.power = 2.0
    # dB conversion: 10*log10(max(S, amin) / ref); top_db <= 0 disables the dynamic-range clip.
    f.amin = 1e-10
    f.top_db = 0.0
    return f


def get_model_config() -> ml_collections.ConfigDict:
    """The CNN+BiLSTM. The defaults build exactly the reference network."""
    m = ml_collections.ConfigDict()
    m.num_classes = len(EMOTIONS)
    m.conv_channels = (32, 64, 128, 128)
    m.conv_kernel = 3
    m.pool = 2  # max-pool window and stride, VALID padding
    m.conv_dropout = 0.1
    m.lstm_layers = 2
    m.lstm_units = 128  # per direction
    m.temporal_pooling = "mean"  # 'mean' | 'max' | 'attention'
    m.head_dropout = 0.3
    m.bn_momentum = 0.99
    m.bn_epsilon = 1e-3
    m.scan_unroll = 1  # lax.scan unroll of the LSTM time loop
    m.dtype = "float32"  # compute dtype: 'float32' | 'bfloat16' (params stay float32)
    return m


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    # Zenodo zip, extracted folder, folder of RAVDESS-named files, or prepared shards.
    # Empty: the built-in synthetic demo corpus (generated under the workdir).
    config.data.path = ""
    # How file names (or a manifest) give labels and speakers: 'ravdess' | 'cremad' | 'tess' |
    # 'emodb' | 'savee' | 'manifest' (a CSV/TSV of path, label, speaker); see sejax.corpora.
    config.data.corpus = "ravdess"
    # More corpora mixed into the same shards: "corpus=path" entries, e.g.
    # ("emodb=/data/emodb",). Entry k's actor ids get k * 10000 added, so speakers stay apart.
    config.data.extra_sources = ()
    # The labels the model predicts (model.num_classes must equal their number), and how a
    # corpus's labels map onto them beyond same names and synonyms (anger -> angry):
    # "label=target", "corpus:label=target", or "label=" to leave that label's files out.
    config.data.labels = EMOTIONS
    config.data.label_map = ()
    config.data.on_bad_name = "error"  # 'error' | 'skip' (skipped names are reported)
    # Where shards computed from raw audio are cached; empty: <workdir>/prepared.
    config.data.prepared_dir = ""
    # The demo corpus (used when data.path is empty): its actors and takes per sentence.
    config.data.demo_actors = tuple(range(15, 25))
    config.data.demo_repetitions = (1, 2)
    config.data.num_workers = 0  # feature workers for `prepare`; 0: one per CPU core
    config.data.examples_per_shard = 256
    # Actor-disjoint split: explicit actor ids; train actors are all the others. With
    # split_by='manifest' a manifest's split column decides instead (still speaker-disjoint).
    config.data.split_by = "actor"
    config.data.val_actors = (21, 22)
    config.data.test_actors = (23, 24)
    config.data.shuffle_buffer = 2048
    config.data.prefetch = 2
    # Per-band mean/std from the training actors: 'per_band' | 'global' | 'none'.
    config.data.normalization = "per_band"

    config.features = get_features_config()
    config.model = get_model_config()

    config.train = ml_collections.ConfigDict()
    config.train.parallel = "jit"  # 'jit' (jit + Mesh + shard_map, multi-process) | 'pmap'
    config.train.batch_size = 32  # global batch, split across all local devices
    config.train.num_epochs = 10
    config.train.optimizer = "adam"  # 'adam' | 'adamw'
    config.train.learning_rate = 1e-3
    config.train.schedule = "constant"  # 'constant' | 'cosine' | 'warmup_cosine'
    config.train.warmup_epochs = 0.0
    config.train.weight_decay = 0.0
    config.train.grad_clip_norm = 5.0  # global-norm clipping; <= 0 disables
    config.train.log_every_steps = 10
    config.train.eval_every_epochs = 1
    config.train.checkpoint_every_epochs = 1
    config.train.keep_checkpoints = 2  # latest N, plus the best by validation UAR
    config.train.early_stopping_patience = 0  # epochs without val-UAR gain; 0 disables

    config.eval = ml_collections.ConfigDict()
    config.eval.batch_size = 64
    config.eval.splits = ("validation", "test")

    # Multi-process runs (TPU pod slices, GPU clusters) on JAX's distributed runtime; see
    # sejax/distributed.py. 'auto': join one when a coordinator is given here, by
    # `sejax train --coordinator/--num-processes/--process-id` or by the environment
    # (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID), or when a SLURM step of
    # several tasks or a Cloud TPU VM is detected; 'on': always (JAX detects what is unset);
    # 'off': never. Multi-process runs need train.parallel='jit'.
    config.distributed = ml_collections.ConfigDict()
    config.distributed.mode = "auto"
    config.distributed.coordinator = ""  # HOST:PORT of process 0
    config.distributed.num_processes = 0  # 0: not set
    config.distributed.process_id = -1  # -1: not set
    config.distributed.initialization_timeout_s = 300

    # Inference (`sejax predict`, `sejax.load`), saved with the run so a model carries it:
    # the log-Mel front end ('jax': jax.numpy inside the jitted model, on the accelerator and
    # exportable; 'librosa': the host code the shards were made with), the seconds between
    # sliding windows on clips longer than features.duration_s (<= 0: half the window), and
    # windows per batch. `sejax predict` flags override them.
    config.predict = ml_collections.ConfigDict()
    config.predict.frontend = "jax"
    config.predict.hop_s = 0.0
    config.predict.batch_size = 32
    return config
