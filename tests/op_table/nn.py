"""Table records: ``agnograd.nn.functional`` -- its fused primitives (one node with its own rule,
not a composition: cross_entropy) and its compositions of standard ops (activations, the other
losses, dropout with a seed or a fresh device generator), so they get the same finite-difference
and cross-backend checks as the standard's functions."""

from __future__ import annotations

import agnograd as ag
import agnograd.nn.functional as F

from .core import Op, category, distinct, like


def _away_from_zero(rng, shapes):  # relu: finite differences must not cross its kink
    return [rng.uniform(0.2, 2.0, size=s) * rng.choice([-1.0, 1.0], size=s) for s in shapes]


def _labels(x):
    return like(x, [0, 2, 1, 2], dtype=ag.int64)


OPS = [
    Op("nn.cross_entropy-probs-mean", lambda x, p: F.cross_entropy(x, p), [((4, 3), (4, 3))]),
    Op("nn.cross_entropy-probs-sum", lambda x, p: F.cross_entropy(x * 3.0, p, reduction="sum"),
       [((4, 3), (4, 3))]),
    Op("nn.cross_entropy-probs-none", lambda x, p: F.cross_entropy(x, p, reduction="none"),
       [((4, 3), (4, 3)), ((1, 1), (1, 1))]),
    Op("nn.cross_entropy-labels-mean", lambda x: F.cross_entropy(x, _labels(x)), [((4, 3),)]),
    Op("nn.cross_entropy-labels-none",
       lambda x: F.cross_entropy(x, _labels(x), reduction="none"), [((4, 3),)]),
    # the composed forms: weight, ignore_index (hit), label_smoothing, extra dims, unbatched
    Op("nn.cross_entropy-labels-weight-ignore-smooth",
       lambda x: F.cross_entropy(x, like(x, [0, -100, 1, 2], dtype=ag.int64),
                                 weight=like(x, [0.5, 1.0, 2.0]), label_smoothing=0.1), [((4, 3),)]),
    Op("nn.cross_entropy-labels-3d-ignore-none",
       lambda x: F.cross_entropy(x, like(x, [[0, 2], [-100, 1]], dtype=ag.int64), reduction="none"),
       [((2, 3, 2),)]),
    Op("nn.cross_entropy-probs-3d-weight-smooth",
       lambda x, p: F.cross_entropy(x, p, weight=like(x, [0.5, 1.0, 2.0]), label_smoothing=0.2),
       [((2, 3, 2), (2, 3, 2))]),
    Op("nn.cross_entropy-labels-unbatched", lambda x: F.cross_entropy(x, like(x, 2, dtype=ag.int64)),
       [((3,),)]),
    Op("nn.relu", F.relu, [((5,),), ((2, 3),)], make=_away_from_zero),
    Op("nn.tanh", F.tanh, [((5,),)]),
    Op("nn.sigmoid", F.sigmoid, [((5,),), ((),)], domain=(-6.0, 6.0)),
    Op("nn.softplus", F.softplus, [((5,),)], domain=(-6.0, 6.0)),
    # erf: SciPy's on NumPy, the documented standard-op approximation elsewhere (docs/special.md)
    Op("nn.gelu", F.gelu, [((5,),)], f64_rtol=1e-6, f64_atol=1e-7),
    Op("nn.gelu-tanh", lambda x: F.gelu(x, approximate="tanh"), [((5,),)]),
    Op("nn.softmax", F.softmax, [((4, 3),), ((3,),)]),
    Op("nn.softmax-axis0", lambda x: F.softmax(x, axis=0), [((4, 3),)]),
    Op("nn.log_softmax", F.log_softmax, [((4, 3),), ((3,),)]),
    Op("nn.mse_loss", F.mse_loss, [((4, 3), (4, 3))]),
    Op("nn.mse_loss-sum-none", lambda x, t: F.mse_loss(x, t, reduction="sum")
       + ag.sum(F.mse_loss(x, t, reduction="none") * x), [((4, 3), (4, 3))]),
    Op("nn.binary_cross_entropy_with_logits",
       lambda x, t: F.binary_cross_entropy_with_logits(x, 0.5 * ag.tanh(t) + 0.5), [((4, 3), (4, 3))]),
    Op("nn.binary_cross_entropy", lambda x, t: F.binary_cross_entropy(
        0.45 * ag.tanh(x) + 0.5, 0.5 * ag.tanh(t) + 0.5), [((4, 3), (4, 3))]),
    Op("nn.binary_cross_entropy-weight-none", lambda x: F.binary_cross_entropy(
        0.45 * ag.tanh(x) + 0.5, like(x, [[0.0, 1.0, 0.3]] * 4), weight=like(x, [0.5, 1.0, 2.0]),
        reduction="none"), [((4, 3),)]),
    Op("nn.binary_cross_entropy_with_logits-none", lambda x: F.binary_cross_entropy_with_logits(
        x, like(x, [[0.0, 1.0, 0.3]] * 4), reduction="none"), [((4, 3),)]),
    # activations added with the CNN layers
    Op("nn.softplus-beta", lambda x: F.softplus(x, beta=2.0, threshold=3.0), [((6,),)],
       make=_away_from_zero),
    Op("nn.leaky_relu", lambda x: F.leaky_relu(x, 0.1), [((5,),), ((2, 3),)], make=_away_from_zero),
    Op("nn.elu", lambda x: F.elu(x, alpha=1.5), [((5,),), ((2, 3),)], make=_away_from_zero),
    Op("nn.silu", F.silu, [((5,),), ((),)]),
    # regression losses (inputs drawn away from their kinks)
    Op("nn.l1_loss", lambda x: F.l1_loss(x, like(x, [[0.0] * 3] * 4)), [((4, 3),)],
       make=_away_from_zero),
    Op("nn.l1_loss-sum-none", lambda x, t: F.l1_loss(x, t + 3.0, reduction="sum")
       + ag.sum(F.l1_loss(x, t + 3.0, reduction="none") * x), [((4, 3), (4, 3))]),
    Op("nn.huber_loss", lambda x, t: F.huber_loss(3.0 * x, t, delta=0.7), [((4, 3), (4, 3))],
       make=_away_from_zero),
    Op("nn.huber_loss-none", lambda x: F.huber_loss(x, like(x, [0.1] * 5), reduction="none"),
       [((5,),)], make=_away_from_zero),
    Op("nn.smooth_l1_loss", lambda x, t: F.smooth_l1_loss(3.0 * x, t, beta=0.5), [((4, 3), (4, 3))],
       make=_away_from_zero),
    Op("nn.smooth_l1_loss-sum", lambda x, t: F.smooth_l1_loss(x, t, reduction="sum", beta=2.0),
       [((4, 3), (4, 3))]),
    # nll_loss: labels, class weights, ignore_index, spatial (N, C, d) inputs
    Op("nn.nll_loss", lambda x: F.nll_loss(x, _labels(x)), [((4, 3),)]),
    Op("nn.nll_loss-weight-ignore",
       lambda x, w: F.nll_loss(x, like(x, [0, -100, 1, 2], dtype=ag.int64), weight=ag.exp(w)),
       [((4, 3), (3,))]),
    Op("nn.nll_loss-none-spatial", lambda x: F.nll_loss(
        x, like(x, [[0, 2], [1, 1]], dtype=ag.int64), reduction="none"), [((2, 3, 2),)]),
    Op("nn.nll_loss-sum-unbatched", lambda x: F.nll_loss(x, like(x, 1, dtype=ag.int64),
                                                         reduction="sum"), [((3,),)]),
    Op("nn.binary_cross_entropy_with_logits-weights", lambda x, t, w: F.binary_cross_entropy_with_logits(
        x, 0.5 * ag.tanh(t) + 0.5, weight=w, pos_weight=ag.exp(w[0, ...])),
       [((2, 3), (2, 3), (2, 3))]),
    # normalisation, embedding
    Op("nn.layer_norm", lambda x, w, b: F.layer_norm(x, 4, w, b), [((3, 4), (4,), (4,))]),
    Op("nn.layer_norm-2axes", lambda x: F.layer_norm(x, (3, 4), eps=1e-3), [((2, 3, 4),)]),
    Op("nn.embedding", lambda w: F.embedding(like(w, [[0, 2], [4, 2]], dtype=ag.int64), w),
       [((5, 3),)]),
    # the padding row gets no gradient by design: the record zeroes the rows read from it, so
    # finite differences see the same (test_nn checks the padding row's zero gradient itself)
    Op("nn.embedding-padding", lambda w: F.embedding(like(w, [1, 0, 1, 3], dtype=ag.int64), w,
                                                     padding_idx=1)
       * like(w, [[0.0], [1.0], [0.0], [1.0]]), [((4, 2),)]),
    # convolution (im2col by strided slicing + matmul) and pooling
    Op("nn.conv1d", lambda x, w, b: F.conv1d(x, w, b, stride=2, padding=1), [((2, 2, 6), (3, 2, 3), (3,))]),
    Op("nn.conv1d-same-dilation-groups", lambda x, w: F.conv1d(x, w, padding="same", dilation=2,
                                                               groups=2), [((1, 4, 5), (2, 2, 2))]),
    Op("nn.conv2d", lambda x, w, b: F.conv2d(x, w, b, padding=1), [((2, 1, 4, 4), (2, 1, 3, 3), (2,))]),
    Op("nn.conv2d-stride-dilation-groups", lambda x, w: F.conv2d(
        x, w, stride=(2, 1), padding=(0, 1), dilation=(1, 2), groups=2), [((1, 4, 5, 4), (2, 2, 2, 2))]),
    Op("nn.conv2d-unbatched", lambda x, w: F.conv2d(x, w, padding="valid"), [((2, 3, 3), (1, 2, 2, 2))]),
    Op("nn.conv_transpose1d", lambda x, w, b: F.conv_transpose1d(x, w, b, stride=2, padding=1,
                                                                 output_padding=1),
       [((2, 2, 4), (2, 3, 3), (3,))]),
    Op("nn.conv_transpose2d", lambda x, w: F.conv_transpose2d(x, w, stride=(2, 1), padding=(1, 0),
                                                              groups=2, dilation=(1, 2)),
       [((1, 4, 3, 3), (4, 1, 2, 2))]),
    Op("nn.max_pool1d", lambda x: F.max_pool1d(x, 2), [((2, 2, 5),)], make=distinct),
    Op("nn.max_pool2d", lambda x: F.max_pool2d(x, 3, stride=2, padding=1), [((1, 2, 5, 4),)],
       make=distinct),
    Op("nn.avg_pool1d", lambda x: F.avg_pool1d(x, 3, stride=1, padding=1, count_include_pad=False),
       [((2, 1, 5),)]),
    Op("nn.avg_pool2d", lambda x: F.avg_pool2d(x, 2), [((1, 2, 4, 5),)]),
    # a fixed seed draws the same mask on every call and every backend
    Op("nn.dropout", lambda x: F.dropout(x, 0.3, seed=0), [((4, 5),)]),
    # so does a device generator made afresh from a seed (ag.random): the same Philox bits
    Op("nn.dropout-device-generator",
       lambda x: F.dropout(x, 0.3, generator=ag.random.Generator(0, backend=x.backend)),
       [((4, 5),), ((3, 7),)]),
    # functional extras: F.linear, pad, interpolate, normalize, cosine_similarity, kl_div
    Op("nn.linear", lambda x, w, b: F.linear(x, w, b), [((2, 4, 3), (5, 3), (5,)), ((3,), (2, 3), (2,))]),
    Op("nn.linear-nobias-vector-weight", lambda x, w: F.linear(x, w), [((4, 3), (3,))]),
    Op("nn.pad-constant", lambda x: F.pad(x, (1, 2, 0, 1), value=0.5), [((2, 3, 4),)]),
    Op("nn.pad-constant-crop", lambda x: F.pad(x, (-1, 2)), [((2, 4),)]),
    Op("nn.pad-reflect", lambda x: F.pad(x, (2, 1, 1, 2), mode="reflect"), [((1, 2, 3, 4),)]),
    Op("nn.pad-replicate", lambda x: F.pad(x, (2, 3), mode="replicate"), [((2, 2, 3),)]),
    Op("nn.pad-circular", lambda x: F.pad(x, (1, 3, 2, 0), mode="circular"), [((1, 1, 3, 4),)]),
    Op("nn.interpolate-nearest", lambda x: F.interpolate(x, size=(5, 3)), [((1, 2, 3, 4),)]),
    Op("nn.interpolate-nearest-scale", lambda x: F.interpolate(x, scale_factor=2.5),
       [((2, 1, 3),)]),
    Op("nn.interpolate-bilinear", lambda x: F.interpolate(x, size=(5, 2), mode="bilinear"),
       [((1, 2, 3, 4),)]),
    Op("nn.interpolate-bilinear-align-corners", lambda x: F.interpolate(
        x, scale_factor=1.5, mode="bilinear", align_corners=True), [((1, 1, 3, 4),)]),
    Op("nn.interpolate-linear", lambda x: F.interpolate(x, size=7, mode="linear"), [((2, 1, 4),)]),
    # (the parity audit's modes: tests/test_nn_torch_parity_layers.py compares them with torch)
    Op("nn.interpolate-nearest-exact", lambda x: F.interpolate(x, size=(5, 3), mode="nearest-exact"),
       [((1, 2, 3, 4),)]),
    Op("nn.interpolate-bicubic", lambda x: F.interpolate(x, scale_factor=1.7, mode="bicubic"),
       [((1, 1, 3, 4),)]),
    Op("nn.interpolate-bicubic-align-corners", lambda x: F.interpolate(
        x, size=(2, 5), mode="bicubic", align_corners=True), [((1, 1, 3, 4),)]),
    Op("nn.interpolate-trilinear", lambda x: F.interpolate(x, size=(3, 2, 5), mode="trilinear"),
       [((1, 1, 2, 3, 4),)]),
    Op("nn.interpolate-area", lambda x: F.interpolate(x, size=(2, 3), mode="area"), [((1, 2, 5, 4),)]),
    Op("nn.interpolate-antialias", lambda x: F.interpolate(x, size=(2, 5), mode="bicubic", antialias=True),
       [((1, 1, 5, 4),)]),
    Op("nn.interpolate-same-size-axis", lambda x: F.interpolate(x, scale_factor=(1.1, 2.0), mode="bilinear"),
       [((1, 1, 3, 4),)]),
    Op("nn.normalize", F.normalize, [((4, 3),)]),
    Op("nn.normalize-p1-dim0", lambda x: F.normalize(x, p=1.0, dim=0), [((4, 3),)],
       make=_away_from_zero),
    Op("nn.cosine_similarity", F.cosine_similarity, [((4, 3), (4, 3)), ((4, 3), (1, 3))]),
    Op("nn.cosine_similarity-dim-last", lambda a, b: F.cosine_similarity(a, b, dim=-1),
       [((2, 3, 4), (2, 3, 4))]),
    Op("nn.kl_div", lambda x, t: F.kl_div(F.log_softmax(x), F.softmax(t), reduction="batchmean"),
       [((4, 3), (4, 3))]),
    Op("nn.kl_div-log-target-none", lambda x, t: F.kl_div(x, t, reduction="none", log_target=True),
       [((4, 3), (4, 3))]),
    Op("nn.kl_div-mean-sum", lambda x, t: F.kl_div(x, ag.exp(t)) + F.kl_div(x, ag.exp(t), reduction="sum"),
       [((4, 3), (4, 3))]),
    # attention (rnn): plain, causal, a boolean mask with a row that sees no key, a float mask
    Op("nn.scaled_dot_product_attention", F.scaled_dot_product_attention,
       [((3, 4), (5, 4), (5, 2)), ((2, 3, 4), (2, 3, 4), (2, 3, 4))]),
    Op("nn.scaled_dot_product_attention-causal-scale", lambda q, k, v: F.scaled_dot_product_attention(
        q, k, v, is_causal=True, scale=0.7), [((2, 4, 3), (2, 5, 3), (2, 5, 2))]),
    Op("nn.scaled_dot_product_attention-bool-mask", lambda q, k, v: F.scaled_dot_product_attention(
        q, k, v, attn_mask=like(q, [[True, False, True], [False, False, False]], dtype=ag.bool)),
       [((2, 4), (3, 4), (3, 2))]),
    Op("nn.scaled_dot_product_attention-float-mask", lambda q, k, v, m: F.scaled_dot_product_attention(
        q, k, v, attn_mask=m), [((1, 2, 3, 4), (1, 2, 5, 4), (1, 2, 5, 3), (2, 1, 5))]),
]

# batch, group and instance normalisation (helper `norm`): batch statistics without running ones
# (a record is called many times, so nothing may change between calls), and running ones in
# evaluation mode
OPS += [
    Op("nn.batch_norm-train", lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
       [((4, 3), (3,), (3,)), ((2, 3, 2, 2), (3,), (3,))]),
    Op("nn.batch_norm-eval", lambda x, w: F.batch_norm(
        x, like(x, [0.5, -0.2, 0.1]), like(x, [1.5, 0.5, 2.0]), w, None, eps=1e-3),
       [((2, 3, 2), (3,))]),
    Op("nn.group_norm", lambda x, w, b: F.group_norm(x, 2, w, b), [((2, 4, 3), (4,), (4,))]),
    Op("nn.group_norm-2d", lambda x: F.group_norm(x, 1, eps=1e-3), [((2, 2, 2, 2),)]),
    Op("nn.instance_norm", lambda x, w, b: F.instance_norm(x, weight=w, bias=b),
       [((2, 3, 4), (3,), (3,)), ((1, 2, 2, 3), (2,), (2,))]),
    Op("nn.instance_norm-running", lambda x: F.instance_norm(
        x, like(x, [0.3, -0.1]), like(x, [0.8, 1.2]), use_input_stats=False), [((2, 2, 3),)]),
]

category("nn", OPS)
