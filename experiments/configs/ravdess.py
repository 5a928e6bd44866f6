"""Real RAVDESS speech with the reference front end and network.

    sejax train --workdir runs/ravdess --config experiments/configs/ravdess.py \
        --config.data.path=../shared/data/ravdess-speech-16k

Actors 1-20 train, 21-22 validate (model selection, early stopping), 23-24 test; each held-out
pair is one male and one female actor. One split of 4 held-out actors is noisy (about +-3 UAR
points between seeds); cross-validation over actor-disjoint folds is the honest number.
"""

from sejax.configs import default


def get_config():
    config = default.get_config()
    config.data.path = "../shared/data/ravdess-speech-16k"
    config.data.val_actors = (21, 22)
    config.data.test_actors = (23, 24)
    config.train.batch_size = 32
    config.train.num_epochs = 40
    config.train.learning_rate = 1e-3
    config.train.early_stopping_patience = 10
    return config
