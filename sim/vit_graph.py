"""ViTs as ordinary IR graphs, and back: what lets the HeatViT engine run any imported ViT.

:func:`vit_to_graph` writes a :class:`~chipforge.zoo.vit.VitModel` (the bundled
``vit-digits`` family, or a model whose selectors were just trained) as a
:class:`~chipforge.sim.graph.Graph` made of the importer's own ops plus ``TOKEN_SELECT``
nodes; :func:`graph_to_vit` recognizes the transformer in a graph (the bundled ones, an
ONNX or ``from_torch`` import of a timm-style ViT with hand-written attention or of
``nn.TransformerEncoderLayer(norm_first=True)``) and lowers it to the engine's description
(:class:`~chipforge.zoo.vit.VitModel`), which :func:`chipforge.sim.vit.run_vit` runs in 8-bit
fixed point and :mod:`chipforge.sim.cycle.heatvit` costs.

Recognized structure (anything else is one clear ``ValueError``):

- embedding: data movement (reshape/transpose/flatten), then a ``LINEAR`` on patches or a
  ``CONV2D`` with stride = kernel (timm's ``PatchEmbed``), a class token ``CONCAT``\\ ed at
  index 0 and a position embedding ``ADD_CONST``;
- pre-norm blocks: ``x + Attn(LN1(x))`` then ``x + fc2(GELU(fc1(LN2(x))))``, attention with
  one qkv ``LINEAR`` or three (q, k, v), any number of heads, then a projection ``LINEAR``;
  an optional ``TOKEN_SELECT`` in front of any block;
- head: the class token (``SLICE`` 0:1 of the token axis), a final LayerNorm (before or
  after the slice) and a ``LINEAR``.

The lowering is checked, not trusted: the float executor's output of the graph must equal
the engine's float run of the lowered model on probe inputs.
"""

from __future__ import annotations

import numpy as np

from chipforge.sim.graph import Graph, Node, Op
from chipforge.zoo.vit import VitConfig, VitModel

__all__ = ["graph_to_vit", "vit_to_graph"]

_MOVES = (Op.RESHAPE, Op.TRANSPOSE, Op.FLATTEN)
_PATCH_MOVES = (*_MOVES, Op.SLICE, Op.CONCAT)


def vit_to_graph(model: VitModel, name: str | None = None) -> Graph:
    """The IR graph of ``model``, with a ``TOKEN_SELECT`` node before each selector block."""
    c, p = model.config, model.params
    g, ps, ch, d, t = (c.image_size // c.patch_size, c.patch_size, c.channels, c.dim,
                       c.num_patches + 1)
    nodes: list[Node] = []

    def add(op: Op, nm: str, inputs, attrs=None, params=None) -> str:
        nodes.append(Node(op, nm, tuple(inputs), attrs or {},
                          {k: np.asarray(v, dtype=np.float32) for k, v in (params or {}).items()}))
        return nm

    def linear(nm: str, src: str, key: str) -> str:
        return add(Op.LINEAR, nm, [src], {}, {"weight": p[key + ".weight"],
                                              "bias": p[key + ".bias"]})

    x = add(Op.RESHAPE, "patchify.split", ["input"], {"shape": [ch, g, ps, g, ps]})
    x = add(Op.TRANSPOSE, "patchify.order", [x], {"perm": [2, 4, 1, 3, 5]})
    x = add(Op.RESHAPE, "patchify.flatten", [x], {"shape": [c.num_patches, c.patch_dim]})
    x = linear("patch_embed", x, "patch_embed")
    x = add(Op.CONCAT, "cls_token", [x], {"axis": 1, "constant_index": 0},
            {"constant": p["cls_token"]})
    x = add(Op.ADD_CONST, "pos_embed", [x], {}, {"constant": p["pos_embed"]})
    eps = float(c.norm_eps)
    hd = c.head_dim
    last_selector = None
    for b in range(c.depth):
        pre = f"blocks.{b}."
        if b in c.selector_blocks:
            s = c.selector_blocks.index(b)
            sp = f"selectors.{s}."
            attrs = {"heads": c.heads, "threshold": float(c.threshold(s)),
                     "keep_ratio": float(c.keep_ratios[s]), "protected": 1, "eps": eps}
            if c.selector_center:
                attrs["center"] = True
            if c.engine_threshold_codes:
                attrs["engine_threshold_code"] = int(c.engine_threshold_codes[s])
            if last_selector:
                attrs["mask_from"] = last_selector
            x = last_selector = add(Op.TOKEN_SELECT, f"selector.{s}", [x], attrs, {
                "norm_gamma": p[pre + "norm1.weight"], "norm_beta": p[pre + "norm1.bias"],
                "fc1_weight": p[sp + "fc1.weight"], "fc1_bias": p[sp + "fc1.bias"],
                "fc2_weight": p[sp + "fc2.weight"], "fc2_bias": p[sp + "fc2.bias"],
                "head_logits": p[sp + "head_logits"]})
        h = add(Op.LAYERNORM, pre + "norm1", [x], {"eps": eps},
                {"gamma": p[pre + "norm1.weight"], "beta": p[pre + "norm1.bias"]})
        qkv = linear(pre + "qkv", h, pre + "qkv")
        qkv = add(Op.RESHAPE, pre + "qkv.heads", [qkv], {"shape": [t, 3, c.heads, hd]})
        parts = []
        for i, role in enumerate("qkv"):
            part = add(Op.SLICE, pre + role, [qkv], {"axis": 2, "start": i, "stop": i + 1})
            part = add(Op.RESHAPE, pre + role + ".squeeze", [part], {"shape": [t, c.heads, hd]})
            parts.append(add(Op.TRANSPOSE, pre + role + ".heads", [part], {"perm": [2, 1, 3]}))
        q, k, v = parts
        kt = add(Op.TRANSPOSE, pre + "k.t", [k], {"perm": [1, 3, 2]})
        logits = add(Op.MATMUL, pre + "logits", [q, kt])
        logits = add(Op.MUL_CONST, pre + "scale", [logits], {},
                     {"constant": np.array(hd ** -0.5)})
        attrs = {"axis": 3} | ({"mask_from": last_selector} if last_selector else {})
        attn = add(Op.SOFTMAX, pre + "attn", [logits], attrs)
        ctx = add(Op.MATMUL, pre + "ctx", [attn, v])
        ctx = add(Op.TRANSPOSE, pre + "ctx.tokens", [ctx], {"perm": [2, 1, 3]})
        ctx = add(Op.RESHAPE, pre + "ctx.merge", [ctx], {"shape": [t, d]})
        x = add(Op.ADD, pre + "add1", [x, linear(pre + "proj", ctx, pre + "proj")])
        h = add(Op.LAYERNORM, pre + "norm2", [x], {"eps": eps},
                {"gamma": p[pre + "norm2.weight"], "beta": p[pre + "norm2.bias"]})
        h = add(Op.GELU, pre + "gelu", [linear(pre + "fc1", h, pre + "fc1")],
                {"approximate": "none"})
        x = add(Op.ADD, pre + "add2", [x, linear(pre + "fc2", h, pre + "fc2")])
    x = add(Op.SLICE, "cls", [x], {"axis": 1, "start": 0, "stop": 1})
    x = add(Op.FLATTEN, "cls.flatten", [x])
    x = add(Op.LAYERNORM, "norm", [x], {"eps": eps},
            {"gamma": p["norm.weight"], "beta": p["norm.bias"]})
    linear("head", x, "head")
    meta = {"family": "vit", "training": model.info}
    return Graph(name or model.name or "vit", (ch, c.image_size, c.image_size), nodes,
                 meta=meta)


# --------------------------------------------------------------------------------------
# Recognition


class _Walker:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.nodes = {n.name: n for n in graph.nodes}
        self.consumers: dict[str, list[Node]] = {}
        for n in graph.nodes:
            for i in n.inputs:
                self.consumers.setdefault(i, []).append(n)

    def fail(self, what: str) -> ValueError:
        return ValueError(f"graph {self.graph.name!r} is not a ViT the HeatViT engine runs: "
                          f"{what}")

    def only(self, name: str, op: Op | tuple[Op, ...]) -> Node | None:
        users = self.consumers.get(name, [])
        ops = op if isinstance(op, tuple) else (op,)
        return users[0] if len(users) == 1 and users[0].op in ops else None

    def ancestors(self, name: str, stop: str) -> set[str]:
        """Nodes on paths from ``stop`` (exclusive) to ``name`` (inclusive)."""
        seen, todo = set(), [name]
        while todo:
            cur = todo.pop()
            if cur in seen or cur in (stop, "input"):
                continue
            seen.add(cur)
            todo.extend(self.nodes[cur].inputs)
        return seen


def _shapes(graph: Graph) -> dict[str, tuple[int, ...]]:
    from chipforge.sim.executor import run_graph

    probe = np.zeros((1, *graph.input_shape))
    return {k: v.shape for k, v in run_graph(graph, probe, quantized=False,
                                             return_all=True).items()}


def graph_to_vit(graph: Graph, *, check: bool = True,
                 probe: np.ndarray | None = None) -> VitModel:
    """Lower ``graph`` to the engine's :class:`VitModel` (see the module doc); with
    ``check`` the lowered model's float output must equal the graph's on ``probe`` (default:
    8 random inputs in [0, 1])."""
    w = _Walker(graph)
    shapes = _shapes(graph)
    params: dict[str, np.ndarray] = {}
    if len(graph.input_shape) != 3 or graph.input_shape[1] != graph.input_shape[2]:
        raise w.fail(f"its input must be one square image (C, S, S), not {graph.input_shape}")
    ch, size = graph.input_shape[0], graph.input_shape[1]

    # Embedding.
    embed = next((n for n in graph.nodes if n.weighted), None)
    if embed is None:
        raise w.fail("it has no weighted layer")
    for n in graph.nodes[:graph.nodes.index(embed)]:
        if n.op not in _PATCH_MOVES or n.op is Op.CONCAT and "constant" in n.params:
            raise w.fail(f"{n.op.value} {n.name!r} before the patch embedding (only reshape, "
                         "transpose, flatten, slice and concat may prepare the patches)")
    weight = embed.params["weight"]
    dim = weight.shape[0]
    if embed.op is Op.LINEAR:
        weight = _patch_weight(w, graph, embed)
    if embed.op is Op.CONV2D:
        kh, kw = weight.shape[2:]
        if (kh != kw or int(embed.attrs.get("stride", 1)) != kh or embed.attrs.get("padding", 0)
                or int(embed.attrs.get("groups", 1)) != 1):
            raise w.fail(f"conv {embed.name!r} is not a patch embedding (square kernel, stride "
                         "= kernel, no padding, no groups)")
        patch = kh
        weight = weight.reshape(dim, -1)
    else:
        patch_dim = weight.shape[1]
        patch = int(round((patch_dim / ch) ** 0.5))
        if ch * patch * patch != patch_dim:
            raise w.fail(f"linear {embed.name!r} reads {patch_dim} values per token, not "
                         f"{ch} x a square patch")
    if size % patch:
        raise w.fail(f"patch {patch} does not divide the image side {size}")
    params["patch_embed.weight"] = weight
    params["patch_embed.bias"] = embed.params.get("bias", np.zeros(dim))
    cur = embed.name
    while (n := w.only(cur, _MOVES)) is not None:
        cur = n.name
    cat = w.only(cur, Op.CONCAT)
    if (cat is None or "constant" not in cat.params or int(cat.attrs.get("constant_index", 0))
            or int(cat.attrs["axis"]) != 1):
        raise w.fail("no class token (a constant concatenated at token 0) after the patch "
                     "embedding")
    params["cls_token"] = cat.params["constant"].reshape(1, 1, dim)
    pos = w.only(cat.name, Op.ADD_CONST)
    tokens = shapes[cat.name][1]
    if pos is None or pos.params["constant"].size != tokens * dim:
        raise w.fail("no position embedding (an added constant of (tokens, dim)) after the "
                     "class token")
    params["pos_embed"] = pos.params["constant"].reshape(1, tokens, dim)
    cur = pos.name

    # Blocks.
    depth, heads, hidden, eps = 0, None, None, None
    selector_blocks, ratios, thresholds, sel_hidden = [], [], [], 8
    codes: list[int | None] = []
    centers: list[bool] = []
    while True:
        users = w.consumers.get(cur, [])
        if len(users) == 1 and users[0].op is Op.TOKEN_SELECT:
            sel = users[0]
            if int(sel.attrs["protected"]) != 1:
                raise w.fail(f"token_select {sel.name!r} protects {sel.attrs['protected']} "
                             "tokens; the engine protects the class token only (1)")
            s = len(selector_blocks)
            selector_blocks.append(depth)
            ratios.append(float(sel.attrs.get("keep_ratio", 1.0)))
            thresholds.append(float(sel.attrs["threshold"]))
            codes.append(sel.attrs.get("engine_threshold_code"))
            centers.append(bool(sel.attrs.get("center", False)))
            if centers[0] != centers[-1]:
                raise w.fail(f"token_select {sel.name!r}: the engine centers all its selectors "
                             "or none (attr center)")
            sp = f"selectors.{s}."
            for k in ("fc1", "fc2"):
                params[sp + k + ".weight"] = sel.params[k + "_weight"]
                params[sp + k + ".bias"] = sel.params[k + "_bias"]
            params[sp + "head_logits"] = sel.params["head_logits"]
            sel_hidden = sel.params["fc1_weight"].shape[0]
            cur = sel.name
            users = w.consumers.get(cur, [])
        lns = [u for u in users if u.op is Op.LAYERNORM]
        adds = [u for u in users if u.op is Op.ADD]
        if len(users) != 2 or len(lns) != 1 or len(adds) != 1:
            break
        pre = f"blocks.{depth}."
        ln1, add1 = lns[0], adds[0]
        attn_out = next(i for i in add1.inputs if i != cur)
        inner = w.ancestors(attn_out, ln1.name)
        if not inner or ln1.name not in {i for n in inner for i in w.nodes[n].inputs}:
            raise w.fail(f"the residual {add1.name!r} does not add an attention branch of "
                         f"{ln1.name!r}")
        proj = w.nodes[attn_out]
        if proj.op is Op.ADD_CONST and w.nodes.get(proj.inputs[0]) is not None and \
                w.nodes[proj.inputs[0]].op is Op.LINEAR:
            proj = w.nodes[proj.inputs[0]]        # its bias as an add of its own
        if proj.op is not Op.LINEAR:
            raise w.fail(f"attention of block {depth} ends in {proj.op.value} {proj.name!r}, "
                         "not a projection linear")
        soft = [w.nodes[n] for n in inner if w.nodes[n].op is Op.SOFTMAX]
        if len(soft) != 1:
            raise w.fail(f"block {depth} has {len(soft)} softmax nodes in its attention")
        h = shapes[soft[0].name][1] if len(shapes[soft[0].name]) == 4 else 1
        if heads not in (None, h):
            raise w.fail(f"blocks have different head counts ({heads} and {h})")
        heads = h
        if _selector_heads_mismatch(graph, selector_blocks, depth, heads):
            raise w.fail(f"the selector before block {depth} has a head count other than "
                         f"the block's {heads}")
        inputs = [w.nodes[n] for n in inner if w.nodes[n].op is Op.LINEAR
                  and ln1.name in w.nodes[n].inputs]
        if len(inputs) == 1 and inputs[0].params["weight"].shape[0] == 3 * dim:
            qkv_w = inputs[0].params["weight"]
            qkv_b = _bias(w, inputs[0])
        elif len(inputs) == 3:
            qkv_w, qkv_b = _order_qkv(w, inner, soft[0], inputs, dim)
        else:
            raise w.fail(f"block {depth}: attention reads its LayerNorm through "
                         f"{len(inputs)} linear layers (one qkv or three q, k, v expected)")
        params[pre + "qkv.weight"], params[pre + "qkv.bias"] = qkv_w, qkv_b
        params[pre + "proj.weight"] = proj.params["weight"]
        params[pre + "proj.bias"] = _bias(w, proj)
        users2 = w.consumers.get(add1.name, [])
        ln2 = next((u for u in users2 if u.op is Op.LAYERNORM), None)
        add2 = next((u for u in users2 if u.op is Op.ADD), None)
        fc1 = ln2 and w.only(ln2.name, Op.LINEAR)
        act = fc1 and w.only(_biased(w, fc1).name, Op.GELU)
        fc2 = act and w.only(act.name, Op.LINEAR)
        if (len(users2) != 2 or add2 is None or fc2 is None
                or _biased(w, fc2).name not in add2.inputs):
            raise w.fail(f"block {depth}: no pre-norm MLP x + fc2(GELU(fc1(LN(x)))) after "
                         f"{add1.name!r} (post-norm blocks and ReLU MLPs are not supported; "
                         "use nn.TransformerEncoderLayer(norm_first=True, activation='gelu'))")
        for key, ln in (("norm1", ln1), ("norm2", ln2)):
            params[pre + key + ".weight"] = ln.params["gamma"]
            params[pre + key + ".bias"] = ln.params["beta"]
            e = float(f"{float(ln.attrs.get('eps', 1e-5)):.6g}")   # float32 1e-5 is 1e-5
            if eps is not None and abs(e - eps) > 1e-9:
                raise w.fail("LayerNorms have different epsilons")
            eps = e
        hidden = fc1.params["weight"].shape[0]
        for key, fc in (("fc1", fc1), ("fc2", fc2)):
            params[pre + key + ".weight"] = fc.params["weight"]
            params[pre + key + ".bias"] = _bias(w, fc)
        if selector_blocks and selector_blocks[-1] == depth:
            sel = w.nodes[cur]
            for key, pk in (("norm_gamma", "norm1.weight"), ("norm_beta", "norm1.bias")):
                if not np.allclose(sel.params[key], params[pre + pk]):
                    raise w.fail(f"token_select {cur!r} normalizes with other parameters than "
                                 f"block {depth}'s first LayerNorm")
        depth += 1
        cur = add2.name
    if depth == 0:
        raise w.fail("no pre-norm transformer block (x + Attn(LN(x)), then x + MLP(LN(x))) "
                     "after the position embedding")

    # Head: class token, final LayerNorm, linear.
    chain = []
    while (n := w.only(cur, (Op.SLICE, Op.FLATTEN, Op.RESHAPE, Op.LAYERNORM,
                             Op.LINEAR))) is not None:
        chain.append(n)
        cur = n.name
        if n.op is Op.LINEAR:
            break
    ops = [n.op for n in chain]
    slices = [n for n in chain if n.op is Op.SLICE]
    norms = [n for n in chain if n.op is Op.LAYERNORM]
    if (not chain or ops[-1] is not Op.LINEAR or len(slices) != 1 or len(norms) != 1
            or int(slices[0].attrs["axis"]) != 1 or int(slices[0].attrs["start"]) != 0
            or int(slices[0].attrs["stop"]) != 1 or cur != graph.output_name):
        raise w.fail("the head is not class token -> LayerNorm -> linear (mean pooling is "
                     "not supported)")
    params["norm.weight"], params["norm.bias"] = norms[0].params["gamma"], norms[0].params["beta"]
    params["head.weight"] = chain[-1].params["weight"]
    params["head.bias"] = chain[-1].params.get("bias", np.zeros(chain[-1].params[
        "weight"].shape[0]))
    try:
        config = VitConfig(image_size=size, channels=ch, patch_size=patch, dim=dim,
                           heads=heads, depth=depth, mlp_hidden=hidden,
                           num_classes=params["head.weight"].shape[0], norm_eps=eps,
                           selector_blocks=tuple(selector_blocks), keep_ratios=tuple(ratios),
                           selector_hidden=sel_hidden, keep_thresholds=tuple(thresholds),
                           selector_center=bool(centers and centers[0]),
                           engine_threshold_codes=(tuple(int(k) for k in codes)
                                                   if codes and None not in codes else ()))
    except ValueError as e:
        raise w.fail(str(e)) from None
    if config.num_patches + 1 != tokens:
        raise w.fail(f"{tokens} tokens, but {config.num_patches} patches of {patch}x{patch} "
                     "plus a class token")
    model = VitModel(config, {k: np.asarray(v, dtype=np.float32) for k, v in params.items()},
                     dict(graph.meta.get("training", {})), graph.name)
    if check:
        _check(graph, model, w, probe)
    return model


def _patch_weight(w: _Walker, graph: Graph, embed: Node) -> np.ndarray:
    """The patch embedding's weight with its columns in the engine's patch order (channel,
    row, column of the patch), whatever data movement made the patches (timm-style
    reshapes, ``F.unfold``, ``Tensor.unfold``'s slices): the moves are run on an image of
    pixel numbers, which must give each token one square patch of the raster grid."""
    from chipforge.sim.executor import run_graph

    ch, size = graph.input_shape[0], graph.input_shape[1]
    weight = embed.params["weight"]
    patch_dim = weight.shape[1]
    patch = int(round((patch_dim / ch) ** 0.5))
    if ch * patch * patch != patch_dim or size % patch:
        raise w.fail(f"linear {embed.name!r} reads {patch_dim} values per token, not "
                     f"{ch} x a square patch dividing the image side {size}")
    moves = Graph("patches", graph.input_shape,
                  [n.copy() for n in graph.nodes[:graph.nodes.index(embed)]] or [
                      Node(Op.FLATTEN, "flat", ("input",))],
                  output=embed.inputs[0] if embed.inputs[0] != "input" else None)
    pixels = np.arange(ch * size * size, dtype=np.float64).reshape(1, *graph.input_shape)
    seen = (run_graph(moves, pixels, quantized=False) if embed.inputs[0] != "input"
            else pixels)
    grid = size // patch
    if seen.ndim != 3 or seen.shape[1:] != (grid * grid, patch_dim):
        raise w.fail(f"linear {embed.name!r} reads {seen.shape[1:]} per image, not "
                     f"({grid * grid} patch tokens, {patch_dim})")
    idx = seen[0].astype(np.int64)
    c, y, x = idx // (size * size), idx // size % size, idx % size
    column = c * patch * patch + (y % patch) * patch + x % patch    # engine's patch order
    token = (y // patch) * grid + x // patch
    if (not np.array_equal(token, np.broadcast_to(np.arange(grid * grid)[:, None], idx.shape))
            or not (column == column[:1]).all()
            or not np.array_equal(np.sort(column[0]), np.arange(patch_dim))):
        raise w.fail(f"the data movement before linear {embed.name!r} does not give each "
                     f"token one {patch}x{patch} patch in raster order")
    engine = np.empty_like(weight)
    engine[:, column[0]] = weight
    return engine


def _selector_heads_mismatch(graph: Graph, selector_blocks: list[int], depth: int,
                              heads: int) -> bool:
    sels = [n for n in graph.nodes if n.op is Op.TOKEN_SELECT]
    if selector_blocks and selector_blocks[-1] == depth:
        return int(sels[len(selector_blocks) - 1].attrs["heads"]) != heads
    return False


def _biased(w: _Walker, lin: Node) -> Node:
    """The node that holds a linear layer's output with its bias: the layer, or the
    ``ADD_CONST`` of its bias right after it (see :func:`_bias`)."""
    after = w.only(lin.name, Op.ADD_CONST)
    out = lin.params["weight"].shape[0]
    return after if after is not None and after.params["constant"].size == out else lin


def _bias(w: _Walker, lin: Node) -> np.ndarray:
    """A linear layer's bias, also when the exporter adds it as a separate constant
    (``nn.MultiheadAttention``'s in-projection: MatMul, then Add)."""
    out = lin.params["weight"].shape[0]
    bias = lin.params.get("bias", np.zeros(out))
    after = w.only(lin.name, Op.ADD_CONST)
    if after is not None and after.params["constant"].size == out:
        bias = bias + after.params["constant"].reshape(out)
    return bias


def _order_qkv(w: _Walker, inner: set[str], soft: Node, linears: list[Node], dim: int):
    """Stack three projections as (q, k, v): q and k feed the logits' MATMUL (left, right),
    v the MATMUL after the softmax (right)."""
    mms = [w.nodes[n] for n in inner if w.nodes[n].op is Op.MATMUL]
    before = [m for m in mms if m.name in w.ancestors(soft.name, "input")]
    after = [m for m in mms if soft.name in w.ancestors(m.name, "input")]
    if len(before) != 1 or len(after) != 1:
        raise w.fail("attention is not softmax(q k^T) v with two matmuls")
    role = {}
    for lin in linears:
        if lin.params["weight"].shape[0] != dim:
            raise w.fail(f"q/k/v linear {lin.name!r} is not {dim} wide")
        if lin.name in w.ancestors(before[0].inputs[0], "input"):
            role["q"] = lin
        elif lin.name in w.ancestors(before[0].inputs[1], "input"):
            role["k"] = lin
        elif lin.name in w.ancestors(after[0].inputs[1], "input"):
            role["v"] = lin
    if len(role) != 3:
        raise w.fail("cannot tell the q, k and v projections apart")
    ws = [role[r].params["weight"] for r in "qkv"]
    bs = [_bias(w, role[r]) for r in "qkv"]
    return np.concatenate(ws), np.concatenate(bs)


def _check(graph: Graph, model: VitModel, w: _Walker, probe: np.ndarray | None) -> None:
    from chipforge.sim.executor import run_graph
    from chipforge.sim.vit import run_vit

    if probe is None:
        probe = np.random.default_rng(0).random((8, *graph.input_shape))
    ours = run_vit(model, probe, fixed=False).logits
    theirs = run_graph(graph, probe, quantized=False)
    scale = float(np.abs(theirs).max()) + 1e-9
    if theirs.shape != ours.shape or np.abs(ours - theirs).max() > 1e-3 * scale + 1e-5:
        raise w.fail("its blocks look like a ViT, but the engine's float run of them differs "
                     f"from the graph's (max |difference| "
                     f"{np.abs(ours - theirs).max() if theirs.shape == ours.shape else 'n/a'})"
                     "; attention scaled other than by 1/sqrt(head_dim), or an unusual q/k/v "
                     "layout")
