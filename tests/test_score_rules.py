"""benchmarks.score_rules: whole-image scores of tiled images, from per-tile maps."""

from __future__ import annotations

import torch

from benchmarks.score_rules import image_rules


def test_a_defect_goes_back_among_its_own_images_tiles():
    """Two images of two tiles each. Each defect map replaces the tile it was made on among its
    image's tiles, and both rules score the result as worked out by hand below."""
    good = torch.zeros(4, 8, 8)
    good[1] += 0.6  # image 0's second tile is bright all over (normal for it)
    source = torch.tensor([0, 0, 1, 1])
    defect = torch.zeros(2, 8, 8)
    defect[0, :2, :2] = 1.0  # made on tile 0 (image 0): a small, strong spot
    defect[1, :2, :2] = 1.0  # made on tile 1 (image 0, the bright one)
    rules = image_rules(good, defect, source, [0.0, 0.5])
    # maximum: the defect images score 1.0, the good ones 0.6 and 0
    assert rules["highest_tile"][0.0] == 1.0 and rules["stitched"][0.0] == 1.0
    # top half of the pixels. Per tile: good 0 and 0.6, each defect tile 4/32 = 0.125. Highest
    # tile: good images 0.6 and 0; defect 0's image max(0.125, 0.6) = 0.6; defect 1 replaced
    # the bright tile, so its image is max(0, 0.125) = 0.125 (0.6 if it had been added as a
    # third tile). Pairs (defect, good): tie, win, loss, win -> 2.5 / 4.
    assert rules["highest_tile"][0.5] == 0.625
    # stitched, top 64 of 128 pixels: good 0.6 and 0; defect 0 (4 + 60 * 0.6) / 64 = 0.625;
    # defect 1 4 / 64 = 0.0625. Pairs: win, win, loss, win -> 3 / 4.
    assert rules["stitched"][0.5] == 0.75
