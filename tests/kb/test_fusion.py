"""Convex fusion: a weighted sum of absolute scores, so a chunk's fused score depends on
the query and that chunk alone, and agreement between the lists wins."""

from __future__ import annotations

from kb.fusion import convex_fusion, fuse


def test_a_convex_fused_score_does_not_depend_on_the_other_hits() -> None:
    dense = [(1, 0.9), (2, 0.4)]
    keyword = [(2, 12.0), (3, 3.0)]
    alone = dict(convex_fusion(dense, keyword, alpha=0.5, half=4.0))
    crowded = dict(
        convex_fusion(
            [*dense, (7, 0.95), (8, 0.1)],
            [(9, 40.0), *keyword],
            alpha=0.5,
            half=4.0,
        )
    )
    for chunk in (1, 2, 3):
        assert crowded[chunk] == alone[chunk]


def test_a_chunk_both_lists_found_outranks_one_only_one_found() -> None:
    dense = [(1, 0.7), (2, 0.6)]
    keyword = [(3, 9.0), (2, 8.0)]
    order = [h.chunk_id for h in fuse(dense, keyword, 3, fusion="convex")]
    assert order[0] == 2


def test_a_weak_list_cannot_look_confident() -> None:
    # Min-max fusion stretches a list of uniformly weak BM25 hits to [0, 1]; convex keeps
    # them weak, so the strong dense hit stays first.
    dense = [(1, 0.95), (2, 0.5), (4, 0.2)]
    keyword = [(2, 0.4), (3, 0.1)]
    assert fuse(dense, keyword, 3, fusion="convex")[0].chunk_id == 1
    assert fuse(dense, keyword, 3, fusion="relative")[0].chunk_id == 2


def test_a_zero_dense_weight_ranks_by_keywords_alone() -> None:
    dense = [(1, 0.99)]
    keyword = [(2, 5.0), (3, 1.0)]
    order = [h.chunk_id for h in fuse(dense, keyword, 3, fusion="convex", dense_weight=0.0)]
    assert order[:2] == [2, 3]
