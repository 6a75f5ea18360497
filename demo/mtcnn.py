"""MTCNN's three stages, with every resize read from one summed-area table of the photo.

facenet-pytorch's `detect_face` resizes the photo once per pyramid scale, then cuts each candidate
box out and resizes it one box at a time, in a Python loop, for the hundreds of boxes its first
stage proposes. All of these are area interpolations: averages over rectangles of pixels, and a
summed-area table gives any rectangle's sum from four lookups. So here the table is made once per
photo, and each pyramid level, and every box's 24 px (second stage) or 48 px (third stage) view,
comes out of one gather. The values equal torch's area interpolation to the last float bit
(tests/test_faces.py), and the faces found equal facenet-pytorch's to a ten-thousandth of a pixel.
The networks, the thresholds, the box regression and the non-maximum suppressions are
facenet-pytorch's own, called as they are, with two differences in how: the networks get their
inputs channels last (stock MTCNN's are contiguous, on which PyTorch's CPU convolutions run its
small networks 1.5-4 times slower), and the first stage's suppressions, one per pyramid level,
run in one call.
"""

from __future__ import annotations

import numpy as np
import torch
from facenet_pytorch.models.utils.detect_face import (
    batched_nms_numpy,
    bbreg,
    fixed_batch_process,
    generateBoundingBox,
    pad,
    rerec,
)
from torchvision.ops.boxes import batched_nms


def summed_area(pixels: torch.Tensor) -> torch.Tensor:
    """B x C x (H+1) x (W+1) sums of the pixels above and left of each point, of a B x H x W x C uint8 batch.

    In int32: exact (a 1280 px photo sums to under 2^31), and so are the box sums taken from it. Channels
    first: the sum along each row runs on the contiguous axis, and a pyramid level's rows are selected whole.
    The sum down the columns adds one row to the next (numpy's cumsum over a leading axis is three times
    slower). Made so, the table of a 640x480 photo takes a half to a quarter of the time it took in the
    photo's own layout (channels last, summed with numpy's cumsum on both axes).
    """
    b, h, w, c = pixels.shape
    rows = pixels.cpu().numpy().astype(np.int32)
    for y in range(1, h):
        np.add(rows[:, y - 1], rows[:, y], out=rows[:, y])
    table = np.zeros((b, c, h + 1, w + 1), dtype=np.int32)
    inner = table[:, :, 1:, 1:]
    inner[...] = rows.transpose(0, 3, 1, 2)
    np.cumsum(inner, axis=3, out=inner)
    return torch.from_numpy(table).to(pixels.device)


def area_crops(table: torch.Tensor, image_inds: torch.Tensor, y0: torch.Tensor, y1: torch.Tensor,
               x0: torch.Tensor, x1: torch.Tensor, size: int) -> torch.Tensor:
    """N x C x size x size: rows y0:y1 and columns x0:x1 of each box's image, resized by area interpolation.

    Output cell i of a side of n input pixels averages pixels floor(i n / size) to ceil((i + 1) n / size),
    as torch's area interpolation (adaptive average pooling) does; the sums are exact integers. The crops
    come out channels last (a permuted N x size x size x C), the layout the networks run fastest on.
    """
    i = torch.arange(size, device=table.device)

    def edges(start: torch.Tensor, end: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = (end - start)[:, None]
        return start[:, None] + torch.div(i * n, size, rounding_mode="floor"), \
            start[:, None] - torch.div(-(i + 1) * n, size, rounding_mode="floor")

    r0, r1 = edges(y0, y1)  # N x size
    c0, c1 = edges(x0, x1)
    # Flat positions in the table (a take is faster than the same advanced indexing): N x 1 x 1 x C for each
    # box's image and channel, plus each cell's row and column.
    _, channels, height, width = table.shape
    plane = height * width
    base = (image_inds * channels * plane)[:, None, None, None] + torch.arange(channels, device=table.device) * plane
    flat = table.view(-1)

    def at(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:  # N x size x size x C
        return flat.take(base + (rows * width)[:, :, None, None] + cols[:, None, :, None])

    sums = at(r1, c1) - at(r0, c1) - at(r1, c0) + at(r0, c0)
    counts = ((r1 - r0)[:, :, None] * (c1 - c0)[:, None, :])[..., None]
    return (sums.float() / counts.float()).permute(0, 3, 1, 2)


def area_resize(table: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """B x C x out_h x out_w: the whole images resized by area interpolation (a pyramid level).

    As `area_crops` for one box covering each image, but every image shares the rows and columns: the
    differences of two row selections, then of two column selections of those.
    """
    h, w = table.shape[2] - 1, table.shape[3] - 1

    def edges(n: int, cells: int) -> tuple[torch.Tensor, torch.Tensor]:
        i = torch.arange(cells, device=table.device)
        return torch.div(i * n, cells, rounding_mode="floor"), -torch.div(-(i + 1) * n, cells, rounding_mode="floor")

    (r0, r1), (c0, c1) = edges(h, out_h), edges(w, out_w)
    strips = table.index_select(2, r1) - table.index_select(2, r0)  # each output row's band of input rows
    sums = strips.index_select(3, c1) - strips.index_select(3, c0)
    counts = (r1 - r0)[:, None] * (c1 - c0)[None, :]
    # Channels last, as the crops come out too: PyTorch's CPU convolutions run MTCNN's three networks 1.5-4
    # times faster on that layout than on the contiguous one (their few channels).
    return sums.to(torch.float32, memory_format=torch.channels_last) / counts.float()


def _crops(table: torch.Tensor, boxes: torch.Tensor, image_inds: torch.Tensor, w: int, h: int, size: int):
    """Each box's view for the next network, normalised as MTCNN expects, and which boxes had one."""
    y, ey, x, ex = (torch.as_tensor(v, dtype=torch.long) for v in pad(boxes, w, h))
    valid = (ey > y - 1) & (ex > x - 1)  # facenet-pytorch skips a box left empty by the clipping
    crops = area_crops(table, image_inds[valid], y[valid] - 1, ey[valid], x[valid] - 1, ex[valid], size)
    return (crops - 127.5) * 0.0078125, valid


@torch.inference_mode()
def detect_face(imgs: torch.Tensor, minsize: int, pnet, rnet, onet, threshold, factor: float
                ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per image of a B x H x W x 3 uint8 batch: boxes (x1, y1, x2, y2, score) and five landmarks each."""
    batch_size, h, w, _ = imgs.shape
    table = summed_area(imgs)
    # The pyramid's scales, multiplied up step by step as facenet-pytorch does (a power would round otherwise).
    scale, minl, scales = 12.0 / minsize, min(h, w) * 12.0 / minsize, []
    while minl >= 12:
        scales.append(scale)
        scale, minl = scale * factor, minl * factor

    # First stage: the proposal network over the image pyramid, as facenet-pytorch runs it.
    boxes, image_inds, levels = [], [], []
    for level, scale in enumerate(scales):
        im_data = (area_resize(table, int(h * scale + 1), int(w * scale + 1)) - 127.5) * 0.0078125
        reg, probs = pnet(im_data)
        boxes_scale, inds_scale = generateBoundingBox(reg, probs[:, 1], scale, threshold[0])
        boxes.append(boxes_scale)
        image_inds.append(inds_scale)
        levels.append(torch.full_like(inds_scale, level))
    boxes, image_inds = torch.cat(boxes), torch.cat(image_inds)
    # Every level's suppression (per image) in one call, the same as facenet-pytorch's call per level: boxes of
    # two groups never suppress each other, and the next suppression takes the boxes by score, in any order.
    pick = batched_nms(boxes[:, :4], boxes[:, 4], torch.cat(levels) * batch_size + image_inds, 0.5)
    boxes, image_inds = boxes[pick], image_inds[pick]
    pick = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
    boxes, image_inds = boxes[pick], image_inds[pick]
    regw, regh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    boxes = torch.stack([boxes[:, 0] + boxes[:, 5] * regw, boxes[:, 1] + boxes[:, 6] * regh,
                         boxes[:, 2] + boxes[:, 7] * regw, boxes[:, 3] + boxes[:, 8] * regh, boxes[:, 4]], dim=1)
    boxes = rerec(boxes)

    # Second stage: the refinement network on every box's 24 px view, all at once.
    if len(boxes):
        im_data, valid = _crops(table, boxes, image_inds, w, h, 24)
        boxes, image_inds = boxes[valid], image_inds[valid]
        reg, probs = fixed_batch_process(im_data, rnet)
        score = probs[:, 1]
        keep = score > threshold[1]
        boxes = torch.cat((boxes[keep, :4], score[keep, None]), dim=1)
        image_inds, reg = image_inds[keep], reg[keep]
        pick = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
        boxes = rerec(bbreg(boxes[pick], reg[pick]))
        image_inds = image_inds[pick]

    # Third stage: the output network on every box's 48 px view: scores, boxes and landmarks.
    points = torch.zeros(0, 5, 2)
    if len(boxes):
        im_data, valid = _crops(table, boxes, image_inds, w, h, 48)
        boxes, image_inds = boxes[valid], image_inds[valid]
        reg, landmarks, probs = fixed_batch_process(im_data, onet)
        score = probs[:, 1]
        keep = score > threshold[2]
        landmarks, reg = landmarks[keep], reg[keep]
        boxes = torch.cat((boxes[keep, :4], score[keep, None]), dim=1)
        image_inds = image_inds[keep]
        side_w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        side_h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        points = torch.stack((side_w * landmarks[:, :5] + boxes[:, 0:1] - 1,
                              side_h * landmarks[:, 5:] + boxes[:, 1:2] - 1), dim=2)
        boxes = bbreg(boxes, reg)
        pick = batched_nms_numpy(boxes[:, :4], boxes[:, 4], image_inds, 0.7, "Min")
        boxes, image_inds, points = boxes[pick], image_inds[pick], points[pick]

    boxes, points, image_inds = boxes.numpy(), points.numpy(), image_inds.numpy()
    return [(boxes[image_inds == b], points[image_inds == b]) for b in range(batch_size)]
