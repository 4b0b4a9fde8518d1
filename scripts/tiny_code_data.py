"""The tiny-code corpus and tokenizer: CPython's standard library, byte-level BPE, token arrays.

    python scripts/tiny_code_data.py corpus       # list the files + sha256 (scripts/tiny_code_corpus.tsv)
    python scripts/tiny_code_data.py tokenizer    # train the BPE (scripts/tiny_code_tokenizer.json)
    python scripts/tiny_code_data.py encode       # token arrays + held-out eval items (out/tiny-code/data)

Needs the standard library of CPython 3.11.7 (``--lib``, default: the running interpreter's, which must
be 3.11.7 for the hashes to match the manifest) and, for ``tokenizer`` and ``encode``, the
``tokenizers`` package. Everything here runs on a CPU in a minute or two; ``encode`` writes what the
GPU run (scripts/train_tiny_code.py) reads, so the GPU needs neither the sources nor ``tokenizers``.

The tokenizer is GPT-2's scheme: bytes mapped to printable characters, GPT-2's pre-tokenizer regex,
merges learned on the training files. llama.cpp reads it from the GGUF as ``tokenizer.ggml.model =
gpt2`` with ``tokenizer.ggml.pre = gpt-2``, whose split (llama.cpp's unicode.cpp, the custom
``gpt2`` splitter) is the same regex, so both give the same ids (``train_tiny_code.py check`` and
the tests verify this on held-out text).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import sys
import sysconfig
import textwrap

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
MANIFEST = os.path.join(HERE, "tiny_code_corpus.tsv")
TOKENIZER = os.path.join(HERE, "tiny_code_tokenizer.json")
DATA_DIR = os.path.join(HERE, "..", "out", "tiny-code", "data")

PYTHON_VERSION = "3.11.7"
# Modules kept out of training, with their tests: the held-out set the quality yardstick reads.
HELD_OUT = ("textwrap", "fractions", "statistics", "heapq", "colorsys", "shlex", "calendar", "difflib",
            "graphlib", "bisect")
# Not code, or code that is one big table: left out altogether.
SKIP_DIRS = ("site-packages", "pydoc_data", "encodings", "lib-dynload", "__pycache__", "config-3.11-x86_64-linux-gnu")
SKIP_FILES = ("_sysconfigdata__linux_x86_64-linux-gnu.py",)

SPECIALS = ("<|bos|>", "<|endoftext|>", "<|mask|>")
BOS, EOS, MASK = 0, 1, 2
VOCAB_SIZE = 4096


def split_of(rel: str) -> str:
    """'heldout' for a held-out module or its tests, else 'train' (rel: path under Lib/, '/'-separated)."""
    parts = rel.split("/")
    stem = parts[-1][:-3]
    if len(parts) == 1 and stem in HELD_OUT:
        return "heldout"
    if parts[0] == "test" and len(parts) >= 2:
        name = parts[1][:-3] if parts[1].endswith(".py") else parts[1]
        if name.startswith("test_") and name[5:] in HELD_OUT:
            return "heldout"
    return "train"


def select_files(lib: str) -> list[tuple[str, str, str]]:
    """(relpath, sha256, split) for every corpus file under LIB, sorted by path.

    A file is in the corpus when it is a .py file outside SKIP_DIRS/SKIP_FILES that decodes as UTF-8
    and parses with this interpreter's ``ast`` (a few test files are deliberately broken).
    """
    out = []
    for dirpath, dirnames, filenames in os.walk(lib):
        rel_dir = os.path.relpath(dirpath, lib)
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for fn in sorted(filenames):
            if not fn.endswith(".py") or fn in SKIP_FILES:
                continue
            rel = fn if rel_dir == "." else f"{rel_dir}/{fn}".replace(os.sep, "/")
            data = open(os.path.join(dirpath, fn), "rb").read()
            try:
                ast.parse(data.decode("utf-8"))
            except (UnicodeDecodeError, SyntaxError, ValueError):
                continue
            out.append((rel, hashlib.sha256(data).hexdigest(), split_of(rel)))
    return sorted(out)


def read_manifest(path: str = MANIFEST) -> list[tuple[str, str, str]]:
    rows = []
    for line in open(path, encoding="utf-8"):
        if line.startswith("#") or not line.strip():
            continue
        sha, split, rel = line.rstrip("\n").split("\t")
        rows.append((rel, sha, split))
    return rows


def default_lib() -> str:
    return sysconfig.get_paths()["stdlib"]


def load_sources(lib: str, manifest=None) -> dict[str, str]:
    """The manifest's files from LIB, each checked against its sha256."""
    rows = manifest if manifest is not None else read_manifest()
    out = {}
    for rel, sha, _split in rows:
        data = open(os.path.join(lib, rel), "rb").read()
        if hashlib.sha256(data).hexdigest() != sha:
            sys.exit(f"Error: {rel} under {lib} differs from the manifest; use CPython {PYTHON_VERSION}'s Lib/")
        out[rel] = data.decode("utf-8")
    return out


def cmd_corpus(args) -> None:
    rows = select_files(args.lib)
    with open(MANIFEST, "w", encoding="utf-8") as f:
        f.write(f"# tiny-code corpus: CPython {PYTHON_VERSION} Lib/ (PSF licence), built by scripts/tiny_code_data.py\n")
        f.write("# sha256\tsplit\tpath under Lib/\n")
        for rel, sha, split in rows:
            f.write(f"{sha}\t{split}\t{rel}\n")
    n_ho = sum(s == "heldout" for *_, s in rows)
    print(f"{len(rows)} files ({n_ho} held out) -> {MANIFEST}")


# ----------------------------------------------------------------------------------------------
# Tokenizer


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from bytes to printable characters (what byte-level BPE vocabularies store)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTE_DECODER = {c: b for b, c in bytes_to_unicode().items()}


def cmd_tokenizer(args) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    sources = load_sources(args.lib)
    train = [sources[rel] for rel, _, split in read_manifest() if split == "train"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=list(SPECIALS), min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(train, trainer=trainer)
    tok.save(TOKENIZER)
    print(f"vocab {tok.get_vocab_size()} -> {TOKENIZER}")


class Vocab:
    """The trained BPE as the GGUF stores it: token strings (byte-level), merges, and a decoder.

    Decoding needs no ``tokenizers`` (the GPU machine has none); encoding does.
    """

    def __init__(self, path: str = TOKENIZER):
        spec = json.load(open(path, encoding="utf-8"))
        vocab = dict(spec["model"]["vocab"])
        for a in spec["added_tokens"]:
            vocab[a["content"]] = a["id"]
        self.tokens = [None] * len(vocab)
        for t, i in vocab.items():
            self.tokens[i] = t
        assert all(t is not None for t in self.tokens)
        self.merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
        self.path = path
        self._tok = None

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        if self._tok is None:
            from tokenizers import Tokenizer

            self._tok = Tokenizer.from_file(self.path)
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        self.encode("")
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def encode_with_offsets(self, text: str):
        if self._tok is None:
            self.encode("")
        e = self._tok.encode(text, add_special_tokens=False)
        return e.ids, e.offsets

    def decode(self, ids) -> str:
        out = bytearray()
        for i in ids:
            i = int(i)
            if i < len(SPECIALS):
                continue
            out += bytes(BYTE_DECODER[c] for c in self.tokens[i])
        return out.decode("utf-8", errors="replace")


# ----------------------------------------------------------------------------------------------
# Token arrays and eval items


def function_units(src: str) -> list[str]:
    """Every function in SRC (at any depth, decorators included), dedented to column 0."""
    tree = ast.parse(src)
    lines = src.splitlines(keepends=True)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
            text = "".join(lines[first:node.end_lineno])
            text = textwrap.dedent(text)
            if text.startswith(("def ", "async def ", "@")):
                out.append(text.rstrip() + "\n")
    return out


def line_start_tokens(text: str, offsets) -> list[int]:
    """Indices of tokens where a training window may start: a line at column 0 with a non-blank
    character, or the newline-and-indentation token before an indented line (GPT-2's split puts
    the newline and all but the last indentation space in one token)."""
    out = []
    for i, (a, b) in enumerate(offsets):
        if a >= len(text):
            continue
        col0 = (a == 0 or text[a - 1] == "\n") and not text[a].isspace()
        indent = text[a] == "\n" and text[a:b].strip(" \n") == "" and b < len(text) and text[b] == " "
        if col0 or indent:
            out.append(i)
    return out


def encode_split(vocab: Vocab, sources: dict[str, str], rels: list[str]):
    """Token stream of files (each followed by EOS) and of function units (each followed by EOS)."""
    chunks, stream_starts, stream_ends, unit_starts, unit_ends = [], [], [], [], []
    pos = 0
    for rel in rels:
        text = sources[rel]
        ids, offs = vocab.encode_with_offsets(text)
        starts = line_start_tokens(text, offs)
        stream_starts += [pos + s for s in starts]
        stream_ends += [pos + len(ids) + 1] * len(starts)  # the file's EOS included
        chunks.append(np.array(ids + [EOS], np.uint16))
        pos += len(ids) + 1
    units = [u for rel in rels for u in function_units(sources[rel])]
    for ids in vocab.encode_batch(units):
        unit_starts.append(pos)
        unit_ends.append(pos + len(ids) + 1)
        chunks.append(np.array(ids + [EOS], np.uint16))
        pos += len(ids) + 1
    return (np.concatenate(chunks), np.array(stream_starts, np.int32), np.array(stream_ends, np.int32),
            np.array(unit_starts, np.int32), np.array(unit_ends, np.int32))


def eval_items(vocab: Vocab, sources: dict[str, str], rels: list[str], seed: int = 0, n_lines: int = 400,
               n_funcs: int = 120, before: int = 96, after: int = 32):
    """Held-out items for the yardstick, as token ids (the GPU run has no tokenizer).

    lines: a single line of code (3 to 24 tokens, not blank, not a comment) with ``before`` tokens of
    the file before it and ``after`` tokens after it; the line's tokens (its trailing newline left
    out) are what gets masked. funcs: a function's signature line and its docstring when it has one,
    the body to be written.
    """
    rng = np.random.default_rng(seed)
    lines = []
    candidates = []
    for rel in rels:
        text = sources[rel]
        ids, offs = vocab.encode_with_offsets(text)
        starts = {a: i for i, (a, _) in enumerate(offs)}
        ends = {b: i for i, (_, b) in enumerate(offs)}
        line_start = 0
        for line in text.splitlines(keepends=True):
            body = line.rstrip("\n")
            stripped = body.strip()
            a = line_start + (len(body) - len(body.lstrip()))
            b = line_start + len(body)
            line_start += len(line)
            if not stripped or stripped.startswith("#") or stripped.startswith(('"""', "'''")):
                continue
            # The line's own tokens: the first starts at its first non-blank character or is the
            # whitespace token before it (" x" style pieces carry the last indentation space).
            i0 = starts.get(a, starts.get(a - 1))
            i1 = ends.get(b)
            if i0 is None or i1 is None:
                continue
            n = i1 + 1 - i0
            if 3 <= n <= 24 and i0 >= before and i1 + 1 + after <= len(ids):
                candidates.append((rel, i0, i1 + 1, ids))
    pick = rng.choice(len(candidates), size=min(n_lines, len(candidates)), replace=False)
    for j in sorted(pick):
        rel, i0, i1, ids = candidates[j]
        lines.append({"file": rel, "prefix": ids[i0 - before:i0], "target": ids[i0:i1],
                      "suffix": ids[i1:i1 + after]})
    funcs = []
    fcands = []
    for rel in rels:
        if rel.startswith("test/"):
            continue
        for unit in function_units(sources[rel]):
            tree = ast.parse(unit).body[0]
            if unit.startswith("@") or not tree.body:
                continue
            n_sig = tree.body[0].lineno - 1  # lines up to the first statement
            ul = unit.splitlines(keepends=True)
            doc = ast.get_docstring(tree, clean=False) is not None
            head_lines = tree.body[0].end_lineno if doc and len(tree.body) > 1 else n_sig
            # The head ends without its newline: "def f(x):" then "\n    ..." is how the prompt and
            # the body tokenize in running text (GPT-2's split glues a newline to the next indentation).
            head = "".join(ul[:head_lines]).rstrip("\n")
            body = "\n" + "".join(ul[head_lines:])
            n_body = len(vocab.encode(body))
            if 8 <= n_body <= 96 and len(vocab.encode(head)) <= 96:
                fcands.append({"file": rel, "head": head, "body": body, "docstring": doc})
    pick = rng.choice(len(fcands), size=min(n_funcs, len(fcands)), replace=False)
    for j in sorted(pick):
        f = fcands[j]
        funcs.append({**f, "head_ids": vocab.encode(f["head"])})
    return {"lines": lines, "funcs": funcs}


def cmd_encode(args) -> None:
    vocab = Vocab()
    manifest = read_manifest()
    sources = load_sources(args.lib, manifest)
    os.makedirs(args.out, exist_ok=True)
    train = [rel for rel, _, split in manifest if split == "train"]
    held = [rel for rel, _, split in manifest if split == "heldout"]
    for name, rels in (("train", train), ("heldout", held)):
        toks, ss, se, us, ue = encode_split(vocab, sources, rels)
        np.savez_compressed(os.path.join(args.out, f"{name}.npz"), tokens=toks, stream_starts=ss, stream_ends=se,
                 unit_starts=us, unit_ends=ue)
        print(f"{name}: {len(rels)} files, {len(toks):,} tokens, {len(ss):,} line starts, {len(us):,} functions")
    held_src = [rel for rel in held if not rel.startswith("test/")]
    items = eval_items(vocab, sources, held_src)
    with open(os.path.join(args.out, "eval.json"), "w") as f:
        json.dump(items, f)
    print(f"eval: {len(items['lines'])} lines, {len(items['funcs'])} functions")
    with open(os.path.join(args.out, "SOURCE"), "w") as f:
        f.write(f"manifest sha256 {manifest_digest()}\ntokenizer sha256 {file_digest(TOKENIZER)}\n")


def file_digest(path: str) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def manifest_digest() -> str:
    return file_digest(MANIFEST)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["corpus", "tokenizer", "encode", "all"])
    ap.add_argument("--lib", default=default_lib(), help="CPython's Lib/ directory (default: this Python's)")
    ap.add_argument("--out", default=DATA_DIR)
    args = ap.parse_args(argv)
    for cmd in (["corpus", "tokenizer", "encode"] if args.cmd == "all" else [args.cmd]):
        {"corpus": cmd_corpus, "tokenizer": cmd_tokenizer, "encode": cmd_encode}[cmd](args)


if __name__ == "__main__":
    main()
