"""The leaking protocol, for comparison only: the reference recipe on random splits of clips.

    sejax cv --workdir runs/cv-leaking --config experiments/configs/ravdess_leaking.py \
        --config.data.path=../shared/data/ravdess-speech-16k

Clips are dealt at random (stratified by label) so every actor is heard in training and in
test, as in many published RAVDESS numbers. Speaker leakage inflates accuracy; sejax refuses
such a split unless data.allow_leakage is set, and then marks every report "leaking": true.
`sejax cv` makes num_folds random folds (test 1/6 of the clips, validation 1/12); `sejax
train` holds out 10 % for validation and 20 % for test.
"""

from pathlib import Path

from sejax.configs.loading import load_config


def get_config():
    config = load_config(Path(__file__).with_name("ravdess.py"))
    config.data.split_by = "random"
    config.data.allow_leakage = True
    config.data.split_seed = 0
    return config
