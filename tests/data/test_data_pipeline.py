"""The corpus pipeline: formats, bad input, cleaning, dedup, the token cache, hold-out, mixing, stats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import small_run_config, train_bpe_tokenizer, write_config

from fathom.cli import main
from fathom.config import load_config
from fathom.data.cache import prepare_corpus
from fathom.data.clean import clean_text
from fathom.data.mix import document_weights, phase_mix
from fathom.data.pack import epoch_order, pack_rows
from fathom.data.sources import expand_paths

SENTENCE = "The pilot boarding position for Halden Fjord is 59 degrees 7 minutes north."


def _pdf_bytes(text: str) -> bytes:
    """A minimal one-page PDF whose text layer holds ``text`` (Helvetica, one line)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def _messy_corpus(root: Path) -> Path:
    """Good documents in every format, plus every kind of bad file."""
    from pypdf import PdfReader, PdfWriter

    folder = root / "messy"
    folder.mkdir()
    (folder / "manual.txt").write_text(
        "Ballast water exchange shall take place at least 200 nautical miles from land.\n"
    )
    (folder / "notes.md").write_text("# Rule 5\n\nEvery vessel shall at all times maintain a proper look-out.\n")
    (folder / "circular.rst").write_text("Circular 12\n===========\n\nFire drills shall be held weekly.\n")
    (folder / "page.html").write_text(
        "<html><head><title>Port notice</title></head><body><nav>Home | About | Contact</nav>"
        "<article><h1>Port notice 7</h1><p>Vessels arriving at the inner harbour shall reduce speed to six knots "
        "and call the harbour master on channel 12 before passing the breakwater.</p>"
        "<p>Pilotage is compulsory for vessels over 80 metres in length.</p></article>"
        "<footer>Copyright harbour authority</footer></body></html>"
    )
    (folder / "sailing.pdf").write_bytes(_pdf_bytes(SENTENCE))
    writer = PdfWriter(clone_from=PdfReader(folder / "sailing.pdf"))
    writer.encrypt("secret")
    with (folder / "locked.pdf").open("wb") as handle:
        writer.write(handle)
    blank = PdfWriter()
    blank.add_blank_page(612, 792)
    with (folder / "scanned.pdf").open("wb") as handle:
        blank.write(handle)
    (folder / "corrupt.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage")
    (folder / "records.jsonl").write_text(
        json.dumps({"text": "Record one: the master shall log every drill."})
        + "\n"
        + "{broken json\n"
        + json.dumps({"body": "no text field"})
        + "\n"
        + json.dumps({"text": "Record two: lifeboats shall be inspected monthly."})
        + "\n"
    )
    (folder / "list.json").write_text(json.dumps([{"text": "A JSON list document about mooring lines."}]))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"text": ["Parquet row about anchor chains.", "Parquet row about bunkering."]}),
        folder / "rows.parquet",
    )
    (folder / "duplicate.txt").write_text(
        "Ballast water exchange shall take place at least 200 nautical miles from land.\n"
    )
    (folder / "empty.txt").write_text("")
    (folder / "binary.txt").write_bytes(b"\x00\x01\x02\x03binary")
    (folder / "latin1.txt").write_bytes("Caf\xe9 on the quay: crew shore leave ends at 2200.".encode("latin-1"))
    (folder / "dangling.md").symlink_to(folder / "missing.md")
    (folder / "image.png").write_bytes(b"\x89PNG")  # not a document format: not a source at all
    return folder


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory, synthetic_corpus):
    return train_bpe_tokenizer(synthetic_corpus)


def _config(tmp_path: Path, paths, **data):
    return load_config(
        None,
        [
            f"data.paths={json.dumps([str(p) for p in paths])}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "data.num_proc=1",
            *(f"data.{k}={json.dumps(v)}" for k, v in data.items()),
        ],
    )


def _decoded(cache, tokenizer) -> list[str]:
    return [tokenizer.decode(cache.document(i)[:-1].tolist()) for i in range(len(cache))]


def test_every_format_is_read_and_every_bad_file_skipped_with_its_reason(tmp_path, tokenizer, caplog):
    folder = _messy_corpus(tmp_path)
    config = _config(tmp_path, [folder])
    with caplog.at_level("WARNING", logger="fathom"):
        cache = prepare_corpus(config, tokenizer, tokenizer.eos_token_id, progress=False)
    texts = "\n".join(_decoded(cache, tokenizer))
    for expected in (
        "200 nautical miles",
        "proper look-out",
        "Fire drills",
        "reduce speed to six knots",
        SENTENCE,
        "Record one",
        "Record two",
        "mooring lines",
        "anchor chains",
        "bunkering",
        "shore leave",
    ):
        assert expected in texts, expected
    assert "Home | About" not in texts  # trafilatura keeps the article, not the navigation
    reasons = {Path(s.split(" (")[0]).name: r for s, r in cache.meta["skipped"]}
    assert reasons["locked.pdf"].startswith("encrypted PDF")
    assert reasons["scanned.pdf"].startswith("PDF without a text layer")
    assert reasons["corrupt.pdf"].startswith("corrupt PDF")
    assert reasons["empty.txt"] == "empty"
    assert reasons["binary.txt"].startswith("binary")
    assert reasons["dangling.md"].startswith("broken symlink")
    assert reasons["records.jsonl"].startswith("records without a string field 'text'")
    assert cache.meta["duplicates_removed"]["exact"] == 1
    assert "latin1.txt is not UTF-8; read as Windows-1252" in caplog.text
    assert "skipping" in caplog.text and "locked.pdf" in caplog.text
    # every token of the cache is an ended document
    assert all(int(cache.document(i)[-1]) == tokenizer.eos_token_id for i in range(len(cache)))


def test_a_pdf_sentence_is_found_in_the_token_cache(tmp_path, tokenizer):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notice.pdf").write_bytes(_pdf_bytes(SENTENCE))
    cache = prepare_corpus(_config(tmp_path, [tmp_path / "docs"]), tokenizer, tokenizer.eos_token_id, progress=False)
    ids = tokenizer(SENTENCE, add_special_tokens=False)["input_ids"]
    assert cache.document(0)[:-1].tolist() == ids


def test_nothing_usable_is_one_clear_error(tmp_path, local_model_dir, capsys):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "empty.txt").write_text("")
    (tmp_path / "bad" / "binary.md").write_bytes(b"\x00\x00")
    cfg = small_run_config(local_model_dir, [tmp_path / "bad"], tmp_path / "out")
    cfg["data"]["cache_dir"] = str(tmp_path / "cache")
    assert main(["train", "--config", str(write_config(tmp_path / "c.yaml", cfg))]) == 2
    err = capsys.readouterr().err
    assert "fathom: error: data.paths: no usable training documents" in err and "1 empty" in err


def test_special_token_text_inside_a_document_is_not_a_boundary(tmp_path, real_tokenizer):
    tokenizer = real_tokenizer.load()
    eod, im_end = real_tokenizer.endoftext_id, real_tokenizer.im_end_id
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.md").write_text("The log quotes <|endoftext|> and <|im_end|> literally.")
    cache = prepare_corpus(_config(tmp_path, [tmp_path / "d"]), tokenizer, eod, progress=False)
    tokens = cache.document(0).tolist()
    assert tokens.count(eod) == 1 and tokens[-1] == eod and im_end not in tokens


def test_cleaning():
    assert clean_text("ﬁre\u00a0\u00a0drill\x0c\r\n\r\n\r\n\r\nend  ", "NFKC") == "fire drill\n\nend"
    assert clean_text("ﬁre", "NFC") == "ﬁre"
    assert clean_text("a\u200bb\ufeffc") == "abc"


def test_near_duplicates_are_dropped_only_when_asked(tmp_path, tokenizer):
    pytest.importorskip("datasketch")
    base = " ".join(f"word{i}" for i in range(300))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text(base)
    (tmp_path / "d" / "b.txt").write_text(base + " one more word at the end")
    (tmp_path / "d" / "c.txt").write_text(" ".join(f"other{i}" for i in range(300)))
    plain = prepare_corpus(_config(tmp_path, [tmp_path / "d"]), tokenizer, 0, progress=False)
    near = prepare_corpus(_config(tmp_path, [tmp_path / "d"], near_dedup=True), tokenizer, 0, progress=False)
    assert len(plain) == 3 and len(near) == 2
    assert near.meta["duplicates_removed"] == {"exact": 0, "near": 1}


def test_cache_is_reused_and_keyed_on_content(tmp_path, tokenizer, caplog, synthetic_corpus):
    import shutil

    corpus = tmp_path / "corpus"
    shutil.copytree(synthetic_corpus, corpus)
    config = _config(tmp_path, [corpus])
    first = prepare_corpus(config, tokenizer, 0, progress=False)
    with caplog.at_level("INFO", logger="fathom"):
        again = prepare_corpus(config, tokenizer, 0, progress=False)
    assert again.folder == first.folder and "reusing the token cache" in caplog.text
    changed = next(corpus.glob("*.md"))
    changed.write_text(changed.read_text() + "\nAmended.\n")
    assert prepare_corpus(config, tokenizer, 0, progress=False).folder != first.folder
    assert (
        prepare_corpus(_config(tmp_path, [corpus], min_chars=50), tokenizer, 0, progress=False).folder != first.folder
    )


def test_parallel_preparation_gives_the_same_cache(tmp_path, tokenizer):
    folder = _messy_corpus(tmp_path)
    one = prepare_corpus(_config(tmp_path / "a", [folder]), tokenizer, 0, progress=False)
    two = prepare_corpus(
        load_config(None, [f"data.paths=[{folder}]", f"data.cache_dir={tmp_path / 'b'}", "data.num_proc=2"]),
        tokenizer,
        0,
        progress=False,
    )
    assert one.folder.name == two.folder.name  # num_proc is not part of the key ...
    assert np.array_equal(one.length, two.length)  # ... because the result is the same
    assert all(np.array_equal(one.document(i), two.document(i)) for i in range(len(one)))


def test_hold_out_is_seeded_by_document_and_kept_out_of_training(tmp_path, tokenizer, synthetic_corpus):
    config = _config(tmp_path, [synthetic_corpus], eval_fraction=0.25)
    cache = prepare_corpus(config, tokenizer, 0, progress=False)
    held = cache.eval_documents()
    assert 0 < len(held) < len(cache) and len(held) + len(cache.train_documents()) == len(cache)
    assert cache.meta["held_out_documents"] == len(held)
    same = prepare_corpus(
        _config(tmp_path / "other", [synthetic_corpus], eval_fraction=0.25), tokenizer, 0, progress=False
    )
    assert np.array_equal(same.split, cache.split)
    train_ids = {cache.document(i).tobytes() for i in np.flatnonzero(cache.split == 0)}
    assert not any(held[i].tobytes() in train_ids for i in range(len(held)))


def test_datasets_folder_hf_local_dataset_and_globs(tmp_path, tokenizer):
    import datasets

    datasets.Dataset.from_dict({"text": ["Saved dataset row about gangways."]}).save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / "train.jsonl").write_text(json.dumps({"text": "Hub-style dataset row about radar."}) + "\n")
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "x1.txt").write_text("Glob file one about buoys.")
    (tmp_path / "g" / "x2.txt").write_text("Glob file two about lights.")
    paths = [tmp_path / "saved", f"hf:{tmp_path / 'hub'}:train", str(tmp_path / "g" / "x*.txt")]
    assert len(expand_paths([str(p) for p in paths])) == 4
    texts = "\n".join(_decoded(prepare_corpus(_config(tmp_path, paths), tokenizer, 0, progress=False), tokenizer))
    for expected in ("gangways", "radar", "buoys", "lights"):
        assert expected in texts


def test_length_aware_mix():
    lengths = np.array([100] * 90 + [1000] * 1)  # 9,000 short tokens, 1,000 long tokens (phase length 1024)
    natural = phase_mix(lengths, 1024)
    assert natural.long_threshold == 512 and round(natural.natural_long_share, 2) == 0.10
    assert document_weights(lengths, natural) is None
    target = phase_mix(lengths, 1024, long_fraction=0.5)
    assert target.long_weight == pytest.approx(9.0) and target.short_weight == 1.0
    assert target.long_share == pytest.approx(0.5)
    replay = phase_mix(lengths, 1024, long_fraction=0.05)
    assert replay.long_weight == 1.0 and replay.long_share == pytest.approx(0.05)
    upsampled = phase_mix(lengths, 1024, long_doc_upsample=3)
    weights = document_weights(lengths, upsampled)
    order = epoch_order(len(lengths), 0, 0, 0, weights)
    assert (order == 90).sum() == 3 and len(order) == 93
    # over many passes the drawn share of long tokens matches the target
    draws = np.concatenate([epoch_order(len(lengths), 0, 0, e, document_weights(lengths, target)) for e in range(200)])
    share = lengths[draws][lengths[draws] >= 512].sum() / lengths[draws].sum()
    assert abs(share - 0.5) < 0.03


def test_mix_settings_are_validated(tmp_path):
    from fathom.config import ConfigError

    bad = (
        "train.schedule=[{name: A, max_seq_length: 64, token_fraction: 1.0, long_fraction: 0.5, "
        "short_replay_fraction: 0.5}]"
    )
    with pytest.raises(ConfigError, match=r"train\.schedule\[0\]\.short_replay_fraction: set long_fraction or"):
        load_config(None, [bad], check_paths=False)
    with pytest.raises(ConfigError, match=r"data\.eval_fraction: must be in \[0, 1\)"):
        load_config(None, ["data.eval_fraction=1.5"], check_paths=False)


@pytest.mark.slow
def test_packing_keeps_every_token_once_per_pass_on_the_real_corpus(tmp_path, real_corpus, real_tokenizer):
    tokenizer = real_tokenizer.load()
    eod = real_tokenizer.endoftext_id
    config = _config(tmp_path, [real_corpus])
    cache = prepare_corpus(config, tokenizer, eod, progress=False)
    assert cache.meta["files_read"] == len(list(real_corpus.rglob("*.md")))
    docs = cache.train_documents()
    order = epoch_order(len(docs), seed=1, phase_index=0, epoch=0)
    seq_len = 4096
    rows = list(pack_rows((docs[i] for i in order), seq_len))
    flat = np.concatenate([r.input_ids for r in rows])
    expected = np.concatenate([docs[i] for i in order])
    assert np.array_equal(flat, expected[: len(flat)]) and len(expected) - len(flat) < seq_len
    for row in rows:
        assert len(row.input_ids) == seq_len  # zero padding
        starts = np.flatnonzero(row.position_ids == 0)
        # every chunk but a row's first begins right after an end-of-document token
        assert all(row.input_ids[s - 1] == eod for s in starts[1:])
    assert int((expected == eod).sum()) == len(docs)  # each document once, ended once


def test_prepare_and_stats_commands(tmp_path, local_model_dir, synthetic_corpus, capsys):
    cfg = small_run_config(local_model_dir, [synthetic_corpus], tmp_path / "out")
    cfg["data"].update(cache_dir=str(tmp_path / "cache"), eval_fraction=0.1)
    cfg["train"]["schedule"][2].update(long_fraction=0.9, max_seq_length=4096)  # some documents >= 2048, some not
    path = write_config(tmp_path / "c.yaml", cfg)
    assert main(["prepare", "--config", str(path)]) == 0
    assert main(["data", "stats", "--config", str(path), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["sources"] == 24 and stats["documents"] == 24
    assert stats["held_out_documents"] + stats["train_documents"] == 24
    assert sum(stats["length_histogram"].values()) == stats["train_documents"]
    assert [p["name"] for p in stats["phases"]] == ["Phase_1a_Short", "Phase_1b_Medium", "Phase_1c_Long"]
    assert all(p["padding_fraction"] == 0.0 for p in stats["phases"])
    assert stats["phases"][2]["long_share"] == pytest.approx(0.9, abs=1e-3)
    assert main(["data", "stats", "--config", str(path)]) == 0
    assert "per phase" in capsys.readouterr().out
    assert main(["plan", "--config", str(path), "--json"]) == 0  # the plan shows the mix once prepared
    plan = json.loads(capsys.readouterr().out)
    assert plan["phases"][2]["length_mix"]["long_share"] == pytest.approx(0.9, abs=1e-3)
