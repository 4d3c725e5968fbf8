"""K-FAC covariances gathered while the training store is extracted: the same factors as a
separate pass, also when the extraction resumes, and the misuses refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from infscope.attribution.kfac import EKFAC
from infscope.curvature.covariance import KroneckerCovariances, featurize_with_covariances
from infscope.curvature.kfac import KFACFactors
from infscope.data import ExampleSet
from infscope.errors import InputError
from infscope.gradients import GradientExtractor, ProjectionConfig
from infscope.gradients.featurize import featurize
from infscope.tasks import ClassificationTask
from tests.curvature.test_kfac import assert_same_factors


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 3))
    x, y = torch.randn(70, 6), torch.randint(0, 3, (70,))
    data = ExampleSet([(x[i], y[i]) for i in range(70)], tuple(map(str, range(70))))
    config = ProjectionConfig(kind="kronecker", dim=40, seed=3)
    return GradientExtractor(model, ClassificationTask(), config), data


def test_one_pass_gives_the_factors_of_two(setup, tmp_path):
    extractor, data = setup
    store, covariances = featurize_with_covariances(
        extractor, data, tmp_path / "s", shard_size=16, batch_size=8, progress=False
    )
    assert covariances.n_examples == 70
    one_pass = KFACFactors.from_covariances(covariances, store)
    assert_same_factors(one_pass, KFACFactors.fit(extractor, data, store, progress=False))
    assert EKFAC(one_pass).fit(store).score(store).values.shape == (70, 70)


def test_a_resumed_extraction_still_sees_every_example(setup, tmp_path):
    """Half the shards written by an earlier run (worker 0 of 2): the resumed run passes the
    finished shards through once more for the covariances only."""
    extractor, data = setup
    root = tmp_path / "r"
    featurize(extractor, data, root, shard_size=16, worker=0, num_workers=2, progress=False)
    store, covariances = featurize_with_covariances(
        extractor, data, root, shard_size=16, progress=False
    )
    assert covariances.n_examples == 70
    assert_same_factors(
        KFACFactors.from_covariances(covariances, store),
        KFACFactors.fit(extractor, data, store, progress=False),
    )


def test_misuse_is_refused(setup, tmp_path):
    extractor, data = setup
    with pytest.raises(InputError, match="one worker"):
        featurize_with_covariances(extractor, data, tmp_path / "w", num_workers=2)
    with pytest.raises(InputError, match="gradient='loss'"):
        featurize_with_covariances(extractor, data, tmp_path / "m", gradient="measurement")
    covariances = KroneckerCovariances(extractor)
    with pytest.raises(InputError, match="feature statistics"):
        KFACFactors.from_covariances(covariances)  # no store, no feature statistics
    dense = GradientExtractor(extractor.model, extractor.task, ProjectionConfig("sjlt", dim=16))
    with pytest.raises(InputError, match="not supported"):
        KroneckerCovariances(dense)


def test_the_deprecated_covariances_keyword_still_collects_and_checks(setup, tmp_path):
    """``featurize(covariances=)`` (before observers) warns, checks and fills them."""
    extractor, data = setup
    covariances = KroneckerCovariances(extractor)
    with pytest.warns(DeprecationWarning, match="covariances"):
        store = featurize(extractor, data, tmp_path / "s", progress=False, covariances=covariances)
    assert covariances.n_examples == 70
    assert_same_factors(
        KFACFactors.from_covariances(covariances, store),
        KFACFactors.fit(extractor, data, store, progress=False),
    )
    other = GradientExtractor(extractor.model, extractor.task, extractor.projection)
    with pytest.warns(DeprecationWarning), pytest.raises(InputError, match="another extractor"):
        featurize(other, data, tmp_path / "o", covariances=KroneckerCovariances(extractor))
    with pytest.warns(DeprecationWarning), pytest.raises(InputError, match="fresh collector"):
        featurize(extractor, data, tmp_path / "f", covariances=covariances)

