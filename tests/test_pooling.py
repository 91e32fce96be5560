"""functional/pooling.py: max_pool2x2 is F.max_pool2d(x, 2) forward and backward, holding only its indices."""
import pytest
import torch
import torch.nn.functional as F

from torchrl_dreamerv3.functional.pooling import max_pool2x2


def _with_ties(shape, channels_last=False, dtype=torch.float32):
    torch.manual_seed(0)
    x = torch.randn(*shape).round(decimals=1)  # coarse values: many windows hold a tie
    x[..., 0:2, 0:2] = 0.5  # one window of four equal maxima
    x = x.to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@pytest.mark.parametrize("shape, channels_last", [((3, 4, 8, 6), True), ((3, 4, 8, 6), False),
                                                  ((2, 3, 7, 9), False), ((5, 6, 6), False)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_values_and_gradients_are_max_pool2d(shape, channels_last, dtype):
    ref, ours = (_with_ties(shape, channels_last, dtype).requires_grad_() for _ in range(2))
    y_ref, y_ours = F.max_pool2d(ref, 2), max_pool2x2(ours)
    grad = torch.randn(y_ref.shape).to(dtype)
    y_ref.backward(grad)
    y_ours.backward(grad)
    # the same kernels route each gradient to the same input (ties included): equal, not merely close
    assert y_ours.shape == y_ref.shape and y_ours.dtype == dtype and torch.equal(y_ours, y_ref)
    assert torch.equal(ours.grad, ref.grad)
    assert ours.grad[..., 0:2, 0:2].ne(0).flatten(-2).sum(-1).eq(1).all()  # a tied window: one position gets it
    if channels_last:
        assert y_ours.is_contiguous(memory_format=torch.channels_last)
        assert ours.grad.is_contiguous(memory_format=torch.channels_last)


def test_backward_holds_the_indices_not_the_input():
    x = torch.randn(2, 4, 16, 16, requires_grad=True)
    saved = {}

    def record(name):
        def pack(t):
            saved.setdefault(name, []).append((tuple(t.shape), t.dtype))
            return t
        return pack

    for name, pool in (("native", lambda t: F.max_pool2d(t, 2)), ("ours", max_pool2x2)):
        with torch.autograd.graph.saved_tensors_hooks(record(name), lambda t: t):
            pool(x * 1.0)  # x * 1.0: the pooled input is an activation, as a conv output is
    assert ((2, 4, 16, 16), torch.float32) in saved["native"]  # what max_pool2d keeps: 4x the output
    assert saved["ours"] == [((2, 4, 8, 8), torch.int16)]  # flat indices into one 16 x 16 plane


def test_indices_of_large_planes_are_kept_exactly():
    # 200 x 200 = 40,000 positions per plane: beyond int16, so int32; the gradient lands where max_pool2d puts it
    ref, ours = (torch.randn(1, 2, 200, 200).requires_grad_() for _ in range(2))
    with torch.no_grad():
        ours.copy_(ref)
    grad = torch.randn(1, 2, 100, 100)
    F.max_pool2d(ref, 2).backward(grad)
    max_pool2x2(ours).backward(grad)
    assert torch.equal(ours.grad, ref.grad)


def test_gradient_reaches_a_conv_below():
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 8, 8)
    max_pool2x2(conv(x)).square().sum().backward()
    ours = conv.weight.grad.clone()
    conv.weight.grad = None
    F.max_pool2d(conv(x), 2).square().sum().backward()
    torch.testing.assert_close(ours, conv.weight.grad, rtol=1e-6, atol=1e-6)
    assert ours.abs().sum() > 0


def test_other_ranks_are_refused():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\); got shape \(8, 8\)"):
        max_pool2x2(torch.zeros(8, 8))
