"""Default configuration: the reference front end and network, trained on the demo corpus.

Every experiment config in ``experiments/configs/`` starts from ``get_config()`` here and
changes only what it needs, so the defaults are the one place the reference lives
(``shared/reference-model.md``: 16 kHz, 3.0 s, n_fft 512, win 400, hop 160, 64 Mel bands to
8 kHz in dB; four conv blocks 32-64-128-128, two BiLSTM layers of 128 units, mean pooling).
"""

from __future__ import annotations

import ml_collections

from sejax.corpora.ravdess import EMOTIONS  # the default target labels: RAVDESS's eight


def get_features_config() -> ml_collections.ConfigDict:
    """The log-Mel front end. Its fingerprint decides whether prepared shards can be reused."""
    f = ml_collections.ConfigDict()
    f.sample_rate = 16000
    f.duration_s = 3.0  # fixed analysis window; see `crop` and `pad`
    # Where the window starts in a clip: 'start' keeps the first `duration_s` seconds (the
    # reference), 'center' the middle of a longer clip, 'speech' opens 0.1 s before speech
    # starts (the first frame within 40 dB of the loudest; RAVDESS clips open with up to a
    # second of silence; sejax.data.features.crop_start). Clips that run out are zero-padded.
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
    # ref: 'one' (absolute dB, the reference) or 'max' (librosa's ref=np.max: each clip's
    # loudest bin is 0 dB; sejax.data.features.DB_REFERENCES).
    f.ref = "one"
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
    # Max-pool and conv gradients formulated for XLA:CPU (sejax/kernels.py): same math and
    # parameters, about 2x faster train steps on CPU; False: lax.reduce_window and XLA's conv
    # autodiff.
    m.fast_ops = True
    # With fast_ops, how convolution gradients are computed: 'im2col' (kernels.conv2d_same:
    # input gradient as a forward conv, kernel gradient as one im2col matmul) | 'xla' (XLA's
    # autodiff). Which is faster depends on the CPU and batch (benchmarks/RESULTS.md: on Zen 4
    # 'xla' is 1.09x at batch 32 and 'im2col' 1.56x at batch 128); same math to float32
    # rounding.
    m.conv_grad = "im2col"
    # Which kernel computes the convolutions: 'auto' (oneDNN's on CPU when its library builds,
    # else XLA's) | 'onednn' | 'xla' (XLA's, with fast_ops/conv_grad). Same parameters; oneDNN
    # is about 2x faster for the conv layers' forward + gradients on CPU (sejax.model.onednn).
    m.conv_impl = "auto"
    # What computes each block's BatchNorm -> ReLU -> max-pool: 'auto' (the fused C++ op on CPU
    # when the library builds, else XLA's) | 'fused' (one C++ pass each way on CPU, float32,
    # pool 2: sejax.model.onednn.bn_relu_pool) | 'xla' (Flax's ops, fused by XLA). Same
    # variables and values to float32 rounding; the fused op took the train step 1.3-1.4x
    # faster on a Zen 5 (benchmarks/RESULTS.md).
    m.block_impl = "auto"
    # Where dropout masks come from: 'hash' (a counter hash seeded from the step key, ~5x
    # cheaper on CPU; sejax/kernels.py) | 'jax' (flax.linen.Dropout's threefry bernoulli).
    m.dropout_rng = "hash"
    # How fresh parameters are drawn: 'flax' (Flax's defaults: lecun_normal kernels,
    # orthogonal recurrent kernels per gate, zero biases) | 'keras' (as Keras 3 draws the same
    # layers: glorot_uniform kernels, one orthogonal recurrent kernel over the four gates, a
    # unit forget-gate bias; sejax.model.models.keras_initialization).
    m.initializers = "flax"
    return m


def get_augment_config() -> ml_collections.ConfigDict:
    """Training-batch augmentation on log-Mel features; all off (0) by default."""
    a = ml_collections.ConfigDict()
    # SpecAugment: masks per example and their largest width (frames / Mel bands); masked
    # cells are set to 0, the training mean after normalisation.
    a.time_masks = 0
    a.time_mask_width = 20
    a.freq_masks = 0
    a.freq_mask_width = 8
    a.mixup_alpha = 0.0  # mixup: Beta(alpha, alpha) weight per example; 0 disables
    a.gain_db = 0.0  # random gain, uniform in [-gain_db, gain_db] dB per example
    a.noise_std = 0.0  # Gaussian noise of std uniform in [0, noise_std] (normalised units)
    # Speed and pitch perturbation on the spectrogram: time axis resampled by a factor in
    # [1 - speed, 1 + speed]; Mel axis shifted by up to pitch_bands bands.
    a.speed = 0.0
    a.pitch_bands = 0.0
    return a


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
    # Screening by `prepare` (sejax/screening.py): every file found is prepared or rejected
    # with its reason into <shards>/rejected.tsv and metadata.json. Misnamed files: 'skip'
    # (reject and report them) or 'error' (list them all in one error, before any work).
    # strict: stop at the first bad file of any kind. Clips shorter than min_duration_s or
    # longer than max_duration_s (0: no limit) are rejected; silent and broken ones always.
    config.data.on_bad_name = "skip"
    config.data.strict = False
    config.data.min_duration_s = 0.1
    config.data.max_duration_s = 60.0
    # Where shards computed from raw audio are cached; empty: <workdir>/prepared.
    config.data.prepared_dir = ""
    # The demo corpus (used when data.path is empty): its actors and takes per sentence.
    config.data.demo_actors = tuple(range(15, 25))
    config.data.demo_repetitions = (1, 2)
    config.data.num_workers = 0  # feature workers for `prepare`; 0: one per CPU core
    config.data.examples_per_shard = 256
    # Actor-disjoint split: explicit actor ids; train actors are all the others. With
    # split_by='manifest' a manifest's split column decides instead (still speaker-disjoint).
    # split_by='random' deals clips, stratified by label and seeded by split_seed, into
    # random_parts equal parts, of which random_val_parts and random_test_parts are held out
    # (the defaults: 70/10/20). It mixes every speaker into every side, so it needs
    # allow_leakage=True and is reported as leaking.
    config.data.split_by = "actor"
    config.data.val_actors = (21, 22)
    config.data.test_actors = (23, 24)
    config.data.split_seed = 0
    config.data.random_parts = 10
    config.data.random_val_parts = (0,)
    config.data.random_test_parts = (1, 2)
    # The leakage guard refuses any split with a speaker, or an identical recording (sha256
    # of the file), on two sides. True runs such a split anyway; then split.json, the eval
    # reports, summaries and cv.json all carry "leaking": true.
    config.data.allow_leakage = False
    config.data.shuffle_buffer = 2048
    # The last partial training batch of an epoch: dropped (True), or topped up with the
    # epoch's first examples (False), so that every clip is trained on every epoch, as Keras's
    # fit does, while every step keeps the one compiled batch shape.
    config.data.drop_remainder = True
    config.data.prefetch = 2
    # Copy the whole normalised training split to the devices once and gather each batch
    # there (no host pipeline per step; an epoch costs its steps). For corpora that fit in
    # device memory: RAVDESS's 3 s features are ~110 MB. The shuffle is another permutation
    # than tf.data's, equally fixed by (seed, epoch).
    config.data.device_resident = False
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
    # The validation metric that picks the best checkpoint and drives early stopping: 'uar'
    # (balanced accuracy) | 'accuracy' (what a Keras EarlyStopping on val_accuracy watches).
    # Among equal scores the earliest checkpoint is the best.
    config.train.selection_metric = "uar"
    config.train.early_stopping_patience = 0  # epochs without a validation gain; 0 disables
    # Precise BatchNorm: at each epoch's end (before validation and the checkpoint) replace
    # the running BatchNorm averages by the mean statistics of this many training batches,
    # computed as inference runs the network (dropout off) with the current weights. Training
    # is unchanged. The running averages alone (momentum 0.99, as Keras) lag the weights of a
    # short run: on RAVDESS CV folds the reference's final checkpoints scored 0.13-0.49 test
    # UAR with them and 0.46-0.59 with these (experiments/README.md). 0 keeps the running
    # averages (what Keras and PyTorch do).
    config.train.precise_bn_batches = 16
    # Exponential moving average of the weights (0: off), e.g. 0.99: validation, test, precise
    # BatchNorm, checkpoints' inference and export use the average instead of the last step's
    # weights, which on RAVDESS folds moved test UAR by up to 8 points between epochs. The
    # decay warms up as min(decay, (1 + n) / (10 + n)) after n updates. Not measured on CV yet.
    config.train.ema_decay = 0.0
    # A NaN or Inf loss or gradient: 'stop' (exit naming the step; the latest checkpoint stays
    # the last good one) or 'skip' (keep the previous params for that step, count it in the
    # metrics; an epoch in which every update is skipped still stops).
    config.train.on_non_finite = "stop"
    # Loss: label smoothing (0 disables) and class weights ('none', or 'balanced': each class
    # weighted by N / (classes * its count) over the training split).
    config.train.label_smoothing = 0.0
    config.train.class_weights = "none"

    # On-device augmentation of training batches (sejax/augment.py), keyed by the step's rng
    # so a resumed run augments identically. Everything is off by default: the reference.
    config.augment = get_augment_config()

    # Cross-validation (`sejax cv`): actor-disjoint folds, each tested once. fold_set
    # 'balanced': num_folds folds balanced by gender (odd RAVDESS actors are male), fold i
    # testing the i-th pair of male and the i-th pair of female actors in id order (RAVDESS,
    # 6 folds: actors 1-4, 5-8, ..., 21-24); 'emobox': EmoBox's six RAVDESS folds. folds, when
    # set, names each fold's test actors instead. Each fold validates (model selection, early
    # stopping) on val_actors_per_fold training actors, half male and half female, taken from
    # the next fold. only_folds runs some folds (0-based), e.g. to spread them over machines.
    # With data.split_by='random' the folds are num_folds random parts of the clips (leaking).
    # blind prints validation only (test is still recorded): for a comparison registered
    # before its runs, test is read once after the verdict (`sejax compare --split test`).
    config.cv = ml_collections.ConfigDict()
    config.cv.num_folds = 6
    config.cv.fold_set = "balanced"
    config.cv.folds = ()
    config.cv.val_actors_per_fold = 2
    config.cv.only_folds = ()
    config.cv.blind = False

    config.eval = ml_collections.ConfigDict()
    config.eval.batch_size = 64
    config.eval.splits = ("validation", "test")
    # The model the final reports evaluate. 0: the checkpoint with the best validation UAR.
    # N > 0: the mean class probabilities of the last N checkpoints (1: the final model
    # alone), a snapshot ensemble that evens out epoch-to-epoch noise that a small
    # validation split cannot see through; needs train.keep_checkpoints >= N.
    config.eval.average_last_checkpoints = 0

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
