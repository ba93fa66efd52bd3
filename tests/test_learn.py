"""The shipped classifier is the one its corpus and the code's features give today: a change to the
corpus or to how a message is read must come with `python -m bot.learn` (and it says so here)."""

from __future__ import annotations

from bot.learn import corpus_digest, corpus_examples, fit, shipped, shipped_meta


def test_the_shipped_model_was_learned_from_the_corpus_as_it_is() -> None:
    assert shipped_meta()["corpus"] == corpus_digest(), "the corpus changed: run python -m bot.learn"
    model = shipped()
    refit = fit(corpus_examples(), version=model.version)
    assert refit.bias == model.bias and dict(refit.weights) == dict(model.weights), \
        "the features changed since the model was built: run python -m bot.learn"
