"""The GPU fast path, checked on the CPU: no host synchronisation, few recompiles, fused attention.

A host synchronisation is found without a GPU: a dispatch mode records the aten ops that wait
for the device on CUDA (``item``, ``nonzero``, ``equal``, ...), and the Python-level reads of a
tensor's value (``bool()``, ``int()``, ``.item()``, ``.tolist()``, which do not all dispatch an
aten op) are recorded by wrapping them.
"""

import collections
import contextlib
import traceback

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from cmpt_lightning import CMPTLoss, CMPTModel, Task
from cmpt_lightning.models import cmpt as cmpt_module
from cmpt_lightning.models.proxy import CausalLayout, ProxyLayout, proxy_attention

#: aten ops that make the host wait for a CUDA device
SYNC_OPS = {"item", "_local_scalar_dense", "nonzero", "is_nonzero", "equal"}
#: Python-level reads of a tensor's value (each waits for the device on CUDA)
SYNC_METHODS = ("item", "tolist", "__bool__", "__int__", "__float__")
T, F_ = True, False


class _SyncOps(TorchDispatchMode):
    def __init__(self, found):
        super().__init__()
        self.found = found

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in SYNC_OPS:
            self.found[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def host_syncs(monkeypatch):
    """Record everything in the block that would wait for a CUDA device, by name and place."""
    found = collections.Counter()
    for name in SYNC_METHODS:
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, _original=original, _name=name, **kwargs):
            caller = traceback.extract_stack(limit=2)[0]
            found[f"Tensor.{_name} at {caller.filename.rsplit('/', 1)[-1]}:{caller.lineno}"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    with _SyncOps(found):
        yield found
    monkeypatch.undo()


def _training_step(model, batch, image_present, text_present):
    images, texts = batch
    out = model(images, texts, image_present, text_present)
    loss = CMPTLoss(Task.MULTICLASS)(out, torch.tensor([0, 1, 2, 0])).total
    loss.backward()


@pytest.mark.parametrize("method", ["cmpt", "zero_fill", "learned_token", "cross_copy"])
def test_training_step_without_skipping_never_syncs(monkeypatch, batch, method):
    model = CMPTModel("cmpt-tiny", 3, method=method, skip_absent=False).train()
    image_present, text_present = torch.tensor([T, F_, T, T]), torch.tensor([T, T, F_, T])
    _training_step(model, batch, image_present, text_present)  # warm-up
    with host_syncs(monkeypatch) as found:
        _training_step(model, batch, image_present, text_present)
    assert not found, dict(found)


def test_skipping_reads_the_counts_once(monkeypatch, batch):
    model = CMPTModel("cmpt-tiny", 3, skip_absent=True).train()
    image_present, text_present = torch.tensor([T, F_, T, T]), torch.tensor([T, T, F_, T])
    with host_syncs(monkeypatch) as found:
        _training_step(model, batch, image_present, text_present)
    assert sum(found.values()) == 1 and "Tensor.tolist at cmpt.py" in next(iter(found)), found


def test_sample_without_inputs_is_refused_without_a_sync(batch):
    images, texts = batch
    neither = torch.tensor([T, F_, T, T]), torch.tensor([T, F_, T, T])
    model = CMPTModel("cmpt-tiny", 3, skip_absent=False).train()
    with pytest.raises(RuntimeError, match="a sample has neither image nor text"):
        model(images, texts, *neither)  # checked on the device (at once on a CPU)
    for skip, mode in ((True, "train"), (False, "eval")):  # checked on the host
        model = CMPTModel("cmpt-tiny", 3, skip_absent=skip).train(mode == "train")
        with pytest.raises(ValueError, match=r"batch positions \[1\] have neither image nor"):
            model(images, texts, *neither)


def test_skipping_gives_the_same_logits_as_encoding_every_row(batch):
    images, texts = batch
    every = CMPTModel("cmpt-tiny", 3, skip_absent=False).train()
    with torch.no_grad():
        for name, p in every.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    skipping = CMPTModel("cmpt-tiny", 3, skip_absent=True).train()
    skipping.load_state_dict(every.state_dict())
    for image, text in (([T, F_, T, T], [T, T, F_, F_]), ([F_] * 4, [T] * 4), ([T] * 4,) * 2):
        masks = torch.tensor(image), torch.tensor(text)
        with torch.no_grad():
            expected = every(images, texts, *masks).logits
            got = skipping(images, texts, *masks).logits
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


def test_bucket_sizes_are_powers_of_two_up_to_the_batch():
    sizes = [cmpt_module._bucket(n, 12) for n in range(13)]
    assert sizes == [1, 1, 2, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12]
    present = torch.tensor([F_, T, F_, T, T, F_, F_, F_])
    exact = cmpt_module._select(present, 3, bucketed=False)
    assert exact.encode.tolist() == exact.keep.tolist() == [1, 3, 4]
    bucketed = cmpt_module._select(present, 3, bucketed=True)
    assert bucketed.keep.tolist() == [1, 3, 4] and bucketed.encode.tolist()[:3] == [1, 3, 4]
    assert len(bucketed.encode) == 4 and not present[bucketed.encode[3]]
    assert cmpt_module._select(
        torch.zeros(4, dtype=torch.bool), 0, bucketed=False
    ).encode.tolist() == [0]
    assert cmpt_module._select(torch.ones(4, dtype=torch.bool), 4, bucketed=True) is None


@pytest.fixture
def counted_compile(monkeypatch):
    """``torch.compile`` with the eager backend (fast), counting the graphs it compiles."""
    graphs = []
    real = torch.compile

    def backend(gm, example_inputs):
        graphs.append(len(gm.graph.nodes))
        return gm.forward

    def compile_eager(fn, **kwargs):
        return real(fn, **{**kwargs, "backend": backend})

    monkeypatch.setattr(torch, "compile", compile_eager)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield graphs
    torch._dynamo.reset()


#: (image_present, text_present) of the compiled steps: batch sizes and missing rows vary,
#: down to a single image and a batch without any text
COMPILED_STEPS = [
    ([T, T, F_, T, T, F_, T, T], [T, F_, T, T, F_, T, T, T]),
    ([T, F_, T, T, F_, T], [F_, T, T, T, T, T]),
    ([F_, F_, F_, T, F_, F_, F_, F_], [T] * 8),
    ([T, T, F_, T, T], [T, T, T, F_, T]),
    ([T] * 7, [F_] * 7),
]


@pytest.mark.parametrize(("skip_absent", "graphs"), [(None, 2), (True, 4)])
def test_compiled_towers_recompile_a_bounded_number_of_times(
    counted_compile, skip_absent, graphs, batch
):
    images, texts = batch
    images, texts = images.repeat(2, 1, 1, 1), texts.repeat(2, 1)  # 8 samples
    model = CMPTModel("cmpt-tiny", 3, compile_towers=True, skip_absent=skip_absent).train()
    sizes = collections.defaultdict(set)
    original = model._tower

    def recording(name):  # the batch sizes each compiled tower sees
        tower = original(name)

        def call(inputs, proxy):
            sizes[name].add(inputs.shape[0])
            return tower(inputs, proxy)

        return call

    model._tower = recording
    for image, text in COMPILED_STEPS:
        image_present, text_present = torch.tensor(image), torch.tensor(text)
        size = len(image)  # a fresh batch of that size, as a data loader gives it
        out = model(images[:size].clone(), texts[:size].clone(), image_present, text_present)
        CMPTLoss(Task.MULTICLASS)(out, torch.arange(size) % 3).total.backward()
    counters = torch._dynamo.utils.counters
    assert not counters["graph_break"], dict(counters["graph_break"])  # e.g. torch.equal
    if skip_absent:  # the present rows, padded to a power of two, or the whole batch
        assert sizes["vision"] == {8, 4, 1, 7} and sizes["text"] == {8, 6, 4, 1}, sizes
    else:  # every row: the batch sizes alone
        assert sizes["vision"] == sizes["text"] == {8, 6, 5, 7}
    # dynamic shapes: one graph per tower for every size >= 2, and one for a single row
    assert len(counted_compile) == graphs, counted_compile


def _sdpa_calls(monkeypatch):
    calls = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **kwargs):
        calls.append({"length": q.shape[-2], "mask": attn_mask, "is_causal": is_causal})
        return real(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    return calls


def _layers(model):
    return len(model.clip.visual.transformer.resblocks), len(model.clip.transformer.resblocks)


def test_baselines_run_the_text_tower_with_is_causal(monkeypatch, batch):
    images, texts = batch
    model = CMPTModel("cmpt-tiny", 3, method="zero_fill").eval()
    calls = _sdpa_calls(monkeypatch)
    with torch.no_grad():
        model(images, texts, torch.ones(4, dtype=torch.bool), torch.ones(4, dtype=torch.bool))
    vision_layers, text_layers = _layers(model)
    text_calls = [c for c in calls if c["length"] == texts.shape[1]]
    assert len(calls) == vision_layers + text_layers and len(text_calls) == text_layers
    assert all(c["is_causal"] and c["mask"] is None for c in text_calls)  # flash-eligible
    assert all(not c["is_causal"] and c["mask"] is None for c in calls if c not in text_calls)


def test_proxy_path_runs_one_attention_call_per_layer(monkeypatch, batch):
    images, texts = batch
    model = CMPTModel("cmpt-tiny", 3).train()
    calls = _sdpa_calls(monkeypatch)
    present = torch.ones(4, dtype=torch.bool)
    model(images, texts, present, present).logits.sum().backward()
    vision_layers, text_layers = _layers(model)
    assert len(calls) == vision_layers + text_layers  # forward: one fused call per layer
    text_masks = [c["mask"] for c in calls if c["length"] == texts.shape[1] + 1]
    assert len(text_masks) == text_layers
    assert all(m is text_masks[0] for m in text_masks)  # the mask is built once per step


def _two_call_reference(q, k, v, layout):
    """The proxy attention as it was before one fused call: real rows and proxy row apart."""
    real = F.scaled_dot_product_attention(
        q[:, :, :-1], k[:, :, :-1], v[:, :, :-1], is_causal=layout.causal
    )
    bias = None
    if layout.proxy_keys is not None:
        keys = F.pad(layout.proxy_keys, (0, 1), value=True)
        bias = torch.zeros(keys.shape, dtype=q.dtype).masked_fill(~keys, float("-inf"))
        bias = bias[:, None, None, :]
    proxy = F.scaled_dot_product_attention(q[:, :, -1:], k, v, attn_mask=bias)
    return torch.cat([real, proxy], dim=2)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("keys", [False, True])
@pytest.mark.parametrize("length", [6, 50])
def test_fused_proxy_attention_equals_the_two_call_reference(causal, keys, length):
    torch.manual_seed(0)
    batch, heads, head_dim = 3, 4, 16
    proxy_keys = None
    if keys:
        ends = torch.tensor([length // 2, length - 1, 0])
        proxy_keys = torch.arange(length)[None] <= ends[:, None]  # shape = [B, L]
    layout = ProxyLayout(causal=causal, proxy_keys=proxy_keys)
    built = ProxyLayout.build(
        length, causal=causal, proxy_keys=proxy_keys, dtype=torch.float32, device="cpu"
    )
    qkv = torch.randn(3, batch, heads, length + 1, head_dim)
    grad = torch.randn(batch, heads, length + 1, head_dim)
    results = []
    for run in (_two_call_reference, proxy_attention, proxy_attention):
        q, k, v = (t.clone().requires_grad_(True) for t in qkv)
        out = run(q, k, v, built if len(results) == 2 else layout)
        out.backward(grad)
        results.append((out.detach(), q.grad, k.grad, v.grad))
    for got in results[1:]:
        for a, b in zip(got, results[0], strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_the_layout_mask_is_built_aligned_in_the_queries_dtype(batch):
    keys = torch.tensor([[T, T, F_], [T, F_, F_]])
    bias = ProxyLayout.build(3, causal=True, proxy_keys=keys, dtype=torch.bfloat16, device="cpu")
    assert bias.bias.dtype == torch.bfloat16 and bias.bias.shape == (2, 1, 4, 4)
    assert bias.bias.stride(-2) % 16 == 0  # fused kernels take it without padding a copy
    layout = CausalLayout()
    assert layout.to(torch.float16) is layout
