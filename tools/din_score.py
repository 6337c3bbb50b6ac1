#!/usr/bin/env python3
"""Scores din-tsv lines with a model export, using numpy alone: the reference of the
model's math for whoever serves it.

  tools/din_score.py EXPORT_DIR DATA.tsv [--output PRED] [--batch N]

EXPORT_DIR is what `launch/din-train --export DIR --resume CKPT` writes:

  model.json          the architecture (below)
  dense/NAME.npy      float32 tensors: att.L.w [in, out], att.L.b [out], att.L.alpha [out]
                      (Dice and PReLU layers), the same for top.L, and per Dice layer
                      NAME.running_mean / NAME.running_var [out]
  embeddings/TABLE/part-*.ids.npy (uint64 [n]) and .emb.npy (float32 [n, dim]), or
                      part-*.txt ("id<TAB>v1 v2 ...") for TEXT tables; MANIFEST, _SUCCESS

Prints one probability per input line (blank lines have none), in input order, to
PRED or stdout, and the AUC and logloss over the labels on stderr.

The model (DIN, docs/design.md section 8), for one sample, everything in float32:

  Embeddings. Table T maps an ID to a row of T.dim floats; an ID the table lacks reads
  as zeros. A multi-valued field (a user or context field listing several IDs) is the
  sum of its rows (zeros when empty).

  Item vector. The candidate fields listed in item_fields (in order) are concatenated:
  v_a = [emb(item), emb(cate)] for din-tsv, item_dim = 32 with dim 16. Behaviour j
  (the aligned behaviour fields' j-th IDs) gives e_j the same way. Only the newest
  min(data.max_history, max_history) behaviours are kept (lists are oldest first).

  Attention (pooling ATTENTION). For each kept behaviour
      x_j = [v_a, e_j, v_a - e_j, v_a * e_j]            (4 * item_dim)
      w_j = MLP_att(x_j)                                 (a scalar)
  with attention_softmax the w_j of the sample are replaced by softmax(w).
  SUM pooling: w_j = 1; MEAN: w_j = 1/H (H kept behaviours, 1 when there are none).

  Pooling. u = sum_j w_j e_j (zeros without behaviours).

  Top input z [top_input.width], zeros, then: every user field, every candidate field
  outside the item and every context field (top_input.fields: group, field index, col,
  dim) at its columns; u at u_col, v_a at u_col + item_dim, u * v_a at
  u_col + 2 * item_dim.

  MLP. Each layer: s = x W + b, then its activation
      DICE     p = sigmoid((s - running_mean) / sqrt(running_var + dice_epsilon))
               y = s * (alpha + p * (1 - alpha))
      PRELU    y = s if s > 0 else alpha * s
      RELU     y = max(s, 0)
      SIGMOID  y = sigmoid(s)
      NONE     y = s (the last layer of each MLP, one output)

  Output. probability = sigmoid(MLP_top(z)).
"""
import argparse
import glob
import json
import os
import sys

import numpy as np


def load_table(export, table, dim):
    """(index of ID, [n + 1, dim] float32 whose last row is the zero row)."""
    d = os.path.join(export, "embeddings", table)
    ids, embs = [], []
    for ids_path in sorted(glob.glob(os.path.join(d, "part-*.ids.npy"))):
        ids.append(np.load(ids_path))
        embs.append(np.load(ids_path[:-len(".ids.npy")] + ".emb.npy").reshape(-1, dim))
    for txt in sorted(glob.glob(os.path.join(d, "part-*.txt"))):
        with open(txt) as f:
            for line in f:
                key, values = line.rstrip("\n").split("\t")
                ids.append(np.array([int(key)], dtype=np.uint64))
                embs.append(np.array([[float(v) for v in values.split()]], dtype=np.float32))
    if not ids:
        raise SystemExit("din_score: no part files in " + d)
    all_ids = np.concatenate(ids)
    rows = np.concatenate(embs + [np.zeros((1, dim), dtype=np.float32)]).astype(np.float32)
    index = {int(i): n for n, i in enumerate(all_ids.tolist())}
    return index, rows


class Model:
    def __init__(self, export):
        with open(os.path.join(export, "model.json")) as f:
            self.m = json.load(f)
        m = self.m
        if m.get("format") != "din-model-export":
            raise SystemExit("din_score: %s is not a model export" % export)
        for group in m["fields"].values():
            for field in group:
                if field["hash"]:
                    raise SystemExit("din_score: field %s hashes its IDs; this scorer reads "
                                     "numeric IDs only" % field["name"])
        self.tables = {}
        for name, t in m["tables"].items():
            self.tables[name] = load_table(export, name, t["dim"])
        self.eps = np.float32(m["dice_epsilon"])

        def layers(spec):
            out = []
            for layer in spec:
                p = {k: np.load(os.path.join(export, layer[k])).astype(np.float32)
                     for k in ("weight", "bias", "alpha", "running_mean", "running_var")
                     if k in layer}
                p["activation"] = layer["activation"]
                out.append(p)
            return out
        self.att = layers(m["attention"])
        self.top = layers(m["top"])

    def emb(self, table, ids):
        """[len(ids), dim] rows, zeros for unknown IDs."""
        index, rows = self.tables[table]
        zero = rows.shape[0] - 1
        return rows[[index.get(i, zero) for i in ids]]

    def mlp(self, layers, x):
        for p in layers:
            s = (x @ p["weight"] + p["bias"]).astype(np.float32)
            act = p["activation"]
            if act == "DICE":
                inv_std = np.float32(1) / np.sqrt(p["running_var"] + self.eps)
                prob = sigmoid((s - p["running_mean"]) * inv_std)
                x = s * (p["alpha"] + prob * (np.float32(1) - p["alpha"]))
            elif act == "PRELU":
                x = np.where(s > 0, s, p["alpha"] * s)
            elif act == "RELU":
                x = np.maximum(s, np.float32(0))
            elif act == "SIGMOID":
                x = sigmoid(s)
            else:
                x = s
            x = x.astype(np.float32)
        return x

    def score(self, samples):
        """Probabilities of parsed samples (see parse)."""
        m = self.m
        fields = m["fields"]
        D = m["item_dim"]
        B = len(samples)
        item_fields = m["item_fields"]
        # v_a [B, D]; behaviours packed [N, D] with their sample.
        va = np.zeros((B, D), dtype=np.float32)
        hist_len = [len(s["behavior"][item_fields[0]]) if item_fields else 0 for s in samples]
        owner = np.repeat(np.arange(B), hist_len)
        e = np.zeros((len(owner), D), dtype=np.float32)
        for f, col in zip(item_fields, m["item_cols"]):
            table = fields["candidate"][f]["table"]
            dim = m["tables"][table]["dim"]
            va[:, col:col + dim] = self.emb(table, [s["candidate"][f][0] for s in samples])
            ids = [i for s in samples for i in s["behavior"][f]]
            if ids:
                e[:, col:col + dim] = self.emb(table, ids)
        # Pooling weights.
        if m["pooling"] == "ATTENTION":
            x = np.concatenate([va[owner], e, va[owner] - e, va[owner] * e], axis=1)
            w = self.mlp(self.att, x)[:, 0] if len(owner) else np.zeros(0, np.float32)
            if m["attention_softmax"]:
                for b in range(B):
                    sel = owner == b
                    if sel.any():
                        z = np.exp(w[sel] - w[sel].max())
                        w[sel] = z / z.sum()
        elif m["pooling"] == "SUM":
            w = np.ones(len(owner), dtype=np.float32)
        else:
            counts = np.maximum(np.bincount(owner, minlength=B), 1).astype(np.float32)
            w = np.float32(1) / counts[owner]
        u = np.zeros((B, D), dtype=np.float32)
        np.add.at(u, owner, w[:, None] * e)
        # Top input.
        ti = m["top_input"]
        z = np.zeros((B, ti["width"]), dtype=np.float32)
        for seg in ti["fields"]:
            field = fields[seg["group"]][seg["field"]]
            for b, s in enumerate(samples):
                ids = s[seg["group"]][seg["field"]]
                if ids:
                    z[b, seg["col"]:seg["col"] + seg["dim"]] = \
                        self.emb(field["table"], ids).sum(axis=0, dtype=np.float32)
        c = ti["u_col"]
        z[:, c:c + D] = u
        z[:, c + D:c + 2 * D] = va
        z[:, c + 2 * D:c + 3 * D] = u * va
        return sigmoid(self.mlp(self.top, z)[:, 0])


def sigmoid(x):
    x = np.asarray(x, dtype=np.float32)
    e = np.exp(-np.abs(x)).astype(np.float32)
    r = (np.float32(1) / (np.float32(1) + e)).astype(np.float32)
    return np.where(x >= 0, r, e * r).astype(np.float32)


def parse(model, line, where):
    """{label, user: [[ids]...], candidate, behavior, context} of one line."""
    m = model.m
    data = m["data"]
    cols = line.split(data["column_separator"])
    if data["num_columns"] and len(cols) != data["num_columns"]:
        raise SystemExit("%s: %d columns, expected %d" % (where, len(cols), data["num_columns"]))
    keep = [h for h in (data["max_history"], m["max_history"]) if h > 0]
    out = {"label": float(cols[data["label_column"]])}
    for group, fields in m["fields"].items():
        out[group] = []
        for field in fields:
            text = cols[field["column"]]
            if field["multi_valued"]:
                ids = [int(t) for t in text.split(field["separator"]) if t != ""]
            else:
                ids = [int(text)]
            if group == "behavior":
                for k in keep:
                    ids = ids[len(ids) - k:] if len(ids) > k else ids
            out[group].append(ids)
    return out


def auc(labels, probs):
    order = np.argsort(probs, kind="mergesort")
    p, y = probs[order], labels[order]
    ranks = np.empty(len(p))
    i = 0
    while i < len(p):  # average ranks of ties
        j = i
        while j + 1 < len(p) and p[j + 1] == p[i]:
            j += 1
        ranks[i:j + 1] = (i + j) / 2.0 + 1
        i = j + 1
    pos = y.sum()
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    return (ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("export")
    ap.add_argument("data")
    ap.add_argument("--output", help="one probability per line (default: stdout)")
    ap.add_argument("--batch", type=int, default=1024)
    args = ap.parse_args()
    model = Model(args.export)
    samples, probs = [], []
    with open(args.data) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            samples.append(parse(model, line, "%s:%d" % (args.data, n)))
    for i in range(0, len(samples), args.batch):
        probs.append(model.score(samples[i:i + args.batch]))
    probs = np.concatenate(probs) if probs else np.zeros(0, np.float32)
    out = open(args.output, "w") if args.output else sys.stdout
    for p in probs:
        out.write("%.9g\n" % p)
    if args.output:
        out.close()
    labels = np.array([s["label"] for s in samples])
    pc = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    logloss = float(-np.mean(labels * np.log(pc) + (1 - labels) * np.log(1 - pc))) \
        if len(labels) else float("nan")
    print(json.dumps({"predictions": len(probs), "auc": auc(labels, probs.astype(np.float64)),
                      "logloss": logloss}), file=sys.stderr)


if __name__ == "__main__":
    main()
