"""`stt variants`: the table of foveated configurations against stock SAM, and a trained adapter's row."""

from __future__ import annotations

import pytest

from stt_ros import FoveatedPredictor
from stt_ros.evaluation.scenes import generate_scene
from stt_ros.evaluation.variants import SIZE_BINS, Variant, compare_variants, markdown_table, size_bin, size_table
from stt_ros.model.tiny import non_default_options, tiny_sam


@pytest.fixture(scope="module")
def tiny():
    return tiny_sam(seed=3)


@pytest.fixture(scope="module")
def scenes():
    return [generate_scene(700, 96, 72)]


def test_stock_comes_first_then_each_configuration_on_every_instance(tiny, scenes):
    variants = [Variant(), Variant(**non_default_options())]
    rows = compare_variants(tiny, scenes, variants, latency_repeats=1, sam_variant="tiny")
    assert [r.name for r in rows] == ["stock SAM", variants[0].name, variants[1].name]
    assert {r.instances for r in rows} == {scenes[0].num_instances}
    assert rows[0].agreement == 1.0
    assert all(0.0 <= r.miou <= r.oracle_miou <= 1.0 for r in rows)
    assert markdown_table(rows).count("\n") == len(rows) + 1
    for row in rows:  # the size bins partition the objects
        assert sum(row.size_counts.values()) == row.instances
        weighted = sum(row.by_size[b] * row.size_counts[b] for b in row.by_size) / row.instances
        assert weighted == pytest.approx(row.miou)
    assert size_table(rows).count("\n") == len(rows) + 1


def test_size_bins_follow_the_readme_edges():
    assert [size_bin(p) for p in (0, 999, 1_000, 3_999, 4_000, 16_000, 63_999, 64_000, 10**6)] == [
        SIZE_BINS[i] for i in (0, 0, 1, 1, 2, 3, 3, 4, 4)
    ]


def test_an_adapter_adds_the_row_of_the_configuration_it_was_trained_for(tiny, scenes, tmp_path):
    # an adapter for a non-default configuration with a trainable decoder: the row must use the file's settings
    options = {**non_default_options(), "decoder": "lowrank", "decoder_rank": 2}
    path = tmp_path / "adapter.pt"
    FoveatedPredictor(tiny, variant="tiny", **options).model.save_adapters(path, "tiny")
    trained_for = Variant.of(FoveatedPredictor.with_adapter(tiny, path, "tiny"))
    assert trained_for == Variant(**non_default_options())

    rows = compare_variants(tiny, scenes, [trained_for], latency_repeats=1, adapters=[path], sam_variant="tiny")
    zero_shot, with_adapter = rows[1], rows[2]
    assert with_adapter.name == f"{trained_for.name} + adapter {path}"  # as given: files of one name can differ
    # untrained adapters (and a zero-initialised low-rank decoder update) are exact no-ops
    assert (with_adapter.miou, with_adapter.agreement) == (zero_shot.miou, zero_shot.agreement)


def test_an_adapter_for_another_sam_variant_is_refused(tiny, scenes, tmp_path):
    path = tmp_path / "adapter.pt"
    FoveatedPredictor(tiny).model.save_adapters(path, "vit_b")
    with pytest.raises(ValueError, match="trained for variant 'vit_b', not 'tiny'"):
        compare_variants(tiny, scenes, [], latency_repeats=1, adapters=[path], sam_variant="tiny")
